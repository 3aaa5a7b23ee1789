"""The real-time loop: source thread -> engine thread -> sink thread, joined by one-slot latest-frame boxes.

    Feed (source thread: read, watchdog, fit to the model size) --LatestBox--> engine thread: encode ->
    latent effects -> decode --LatestBox--> sink thread: upscale, dry/wet, overlay -> every sink

- The frame goes one way: each thread hands a Packet down, and what a later thread needs of an earlier
  one's work rides in it (the Framing the frame was fitted with, for the input's picture under the mix).
- Stale frames are dropped, never queued, so latency stays constant; the source is limited to the
  target fps and the sink re-sends the last frame when nothing new came for 1.5 frame intervals, so a
  virtual camera never starves.
- Per-frame fault isolation: an engine that raises (backends raise EngineFault on a NaN/Inf image, checked
  before post-processing), returns non-finite latents or a wrong shape is bypassed for that frame
  (passthrough of the input, or the last good frame), counted, and used again from the next frame.
- `request_model(spec)` loads another model on a background thread and swaps it in between two frames;
  one load runs at a time and the latest request wins (live/loop/model_swap.py, loader.py); a model that fails
  to load leaves the current one playing and is reported.
- An engine that hangs inside one inference (longer than HANG_S) is interrupted where the backend can be
  (onnxruntime) and left behind where it cannot: frames pass through on a fresh engine thread until another
  model is swapped in, and stopping never waits for it.
- Every loop thread (source, engine, sink) runs each iteration under a ThreadGuard (live/loop/guard.py):
  any exception is caught, counted (loop_errors) and logged, and the thread carries on; the output holds
  the last frame or passes the input through meanwhile. A model that cannot be swapped in (its latent
  cannot even be set up) is refused there, and the current one keeps playing.
- Every sink runs on a thread of its own (live/loop/outputs.py): one whose write blocks or raises, whatever
  it raises, is dropped with one line and the others play on; one whose close outlasts its deadline is
  left behind, the recording still finished.
- The pipeline owns its engine(s) and sinks: `stop()` releases devices and closes the engine.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np

from autoencoded import signals
from autoencoded.errors import close_quietly, one_line
from autoencoded.live.control.latent import LatentFX
from autoencoded.live.control.params import Params, ParamStore
from autoencoded.live.engines.base import Engine
from autoencoded.live.engines.frames import upscale
from autoencoded.live.io.sinks import Sink, open_output
from autoencoded.live.io.sources import Source
from autoencoded.live.loop.boxes import LatestBox, Packet
from autoencoded.live.loop.compose import compose, dry_size, input_picture
from autoencoded.live.loop.feed import Feed
from autoencoded.live.loop.framer import Framer
from autoencoded.live.loop.guard import ThreadGuard
from autoencoded.live.loop.model_pass import encode_effects_decode
from autoencoded.live.loop.model_swap import ModelSwap
from autoencoded.live.loop.outputs import Fault, Outputs, sink_name, sink_note, wants_stop
from autoencoded.live.loop.overlay import draw_overlay
from autoencoded.live.loop.stats import LoopStats, stats_report, status_line
from autoencoded.shutdown import native_thread

HANG_S = 5.0  # one inference this long is hung (the slowest model here takes ~0.1 s a frame on a CPU)
LOAD_WAIT_S = 10.0  # stopping waits this long for a model load under way (they take 1-3 s)


class Pipeline:
    def __init__(self, source: Source, engine: Engine, sinks: list[Sink], params: ParamStore | None = None,
                 fps: float = 30.0, size: tuple[int, int] = (1280, 720), overlay: bool = False,
                 on_fault: str = "passthrough", backend: str = "auto", log: Callable[[str], object] = print,
                 feed_options: dict | None = None, modulate: Callable[[Params], Params] | None = None,
                 crop: str = "auto", threads: int | None = None) -> None:
        if on_fault not in ("passthrough", "last"):
            raise ValueError("on_fault must be 'passthrough' or 'last'")
        if not sinks:
            raise ValueError("a pipeline needs at least one sink")
        self.source, self.engine, self.sinks = source, engine, list(sinks)
        self.params: ParamStore = params if params is not None else ParamStore()
        # per frame, on the engine thread: the store's values -> what this frame plays (modulation, quantize)
        self.modulate = modulate
        self.fps, self.size = float(fps), (int(size[0]), int(size[1]))
        self.overlay, self.on_fault, self.backend, self.log = overlay, on_fault, backend, log
        self.threads = threads  # the engine's CPU threads, for models swapped in too
        self.framer = Framer(source, crop, (engine.width, engine.height), log)
        self.fx = LatentFX(engine.z_dim, plan=engine.latent_plan())
        self._stats = LoopStats()
        self.in_box, self.out_box = LatestBox(), LatestBox()
        self.feed = Feed(source, self.in_box, fps=self.fps, stats=self._stats, log=log, framer=self.framer,
                         guard=ThreadGuard("source", self._stats, log), **(feed_options or {}))
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.swap = ModelSwap(self._install, lambda: self.engine, threads=threads, log=log)
        self._busy: tuple[Engine, float] | None = None  # the engine inside an inference, and since when
        self._hung: Engine | None = None  # an engine found hung: frames pass it by until a swap
        self._engine_thread: threading.Thread | None = None
        self._engine_generation = 0
        self.stuck: list[str] = []  # threads still inside native code after stop() (see autoencoded.shutdown)
        self._fault_streak = 0
        self._last_good: np.ndarray | None = None
        self._was_fused = False
        self._max_frames: int | None = None
        self._duration: float | None = None
        self._first_out: float | None = None  # when the first frame went out: --duration counts from there
        self.failed_outputs: list[str] = []  # "name: why" of every output that failed while writing or closing
        self._outputs: Outputs | None = None  # each sink on its own thread (outputs.py), from start()
        self._overlay_text = ""
        self._started = False
        self._closed = False
        self.interrupted = False

    # ------------------------------------------------------------------------------------ lifecycle
    def start(self) -> Pipeline:
        if self._started:
            return self
        self._started = True
        opened: list[Sink] = []
        try:
            for s in self.sinks:
                open_output(s, self.size[0], self.size[1], self.fps)
                opened.append(s)
        except BaseException:
            for s in opened:
                close_quietly(s)
            self.engine.close()
            self._closed = True
            raise
        self._outputs = Outputs(self.sinks)
        self._threads = [threading.Thread(target=self._sink_loop, name="sink", daemon=True)]
        self._threads[0].start()
        self._start_engine_thread()
        self.feed.start()
        return self

    def stop(self) -> None:
        """Stop every thread, release the source, the sinks and the engine. Returns within about 1 s."""
        self._stop.set()
        self._stats.stop()
        self.feed.stop(timeout=0.3)
        self.in_box.close()
        self.out_box.close()
        deadline = time.monotonic() + 0.5
        for t in [*self._threads, self._engine_thread]:
            if t is not None and t is not threading.current_thread():
                t.join(max(0.0, deadline - time.monotonic()))
        if self._closed:
            return
        busy = self._busy
        if busy is not None:  # an inference still running: interrupt it where the backend can
            busy[0].interrupt()
            if self._engine_thread is not None:
                self._engine_thread.join(0.5)
        if not self.swap.close(LOAD_WAIT_S):
            self.log(f"model: a load is still running after {LOAD_WAIT_S:.0f} s; leaving it behind")
        self.stuck = [t.name for t in (self._engine_thread, self.swap.loader.worker)
                      if t is not None and t.is_alive()]
        self._closed = True
        for fault in (self._outputs or Outputs(self.sinks)).close():  # never started: closed all the same
            self.failed_outputs.append(f"{sink_name(fault.sink)}: {fault.why}")
            self.log(f"output {sink_name(fault.sink)}: closing failed ({fault.detail})")
        close_quietly(self.engine)

    def run(self, duration: float | None = None, max_frames: int | None = None,
            status: Callable[[dict], object] | None = None, status_every: float = 1.0) -> dict:
        """Start, run until `duration` s of output (counted from the first frame out, so a recording of
        --duration S plays S seconds), `max_frames` output frames, a sink asks to stop, or Ctrl-C; then
        stop. Returns the final stats."""
        self._max_frames, self._duration = max_frames, duration
        t_start = time.perf_counter()
        self.start()
        next_status = time.perf_counter() + status_every
        try:
            while not self._stop.wait(0.05):
                now = time.perf_counter()
                if duration is not None and self._first_out is None and now >= t_start + duration:
                    break  # not one frame came out in all that time
                if status is not None and now >= next_status:
                    status(self.stats())
                    next_status = now + status_every
        except KeyboardInterrupt:
            self.interrupted = True
        finally:
            # another stop signal while the recordings are finalised must not cut them short (and lose them)
            with signals.held("the outputs (a recording is kept)") as late:
                self.stop()
            self.interrupted = self.interrupted or bool(late)
        return self.stats()

    def __enter__(self) -> Pipeline:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._started and not self._stop.is_set()

    # ---------------------------------------------------------------------------------------- stats
    def stats(self) -> dict:
        d = self._stats.snapshot()
        d.update(dropped=self.in_box.dropped + self.out_box.dropped, model=self.engine.name,
                 model_loading=self.swap.loading, model_error=self.model_error, engine_hung=self._hung is not None,
                 source=self.source.name,
                 sinks=[sink_name(s) for s in list(self.sinks)], target_fps=self.fps,
                 size=f"{self.size[0]}x{self.size[1]}", params_rejected=self.params.rejected,
                 output_notes=[n for s in list(self.sinks) if (n := sink_note(s))])
        # the figures for scripts (--stats-json) ride along, so every status reader (console, OSC /status,
        # the web remote's /api/v1/status) serves the same ones
        d.update({k: v for k, v in stats_report(d).items() if k not in d})
        return d

    # ------------------------------------------------------------------------------------ hot swap
    def request_model(self, spec: object, backend: str | None = None) -> Future:
        """Load `spec` (anything autoencoded.live.engines.open_engine takes) in the background and swap it in
        between two frames. One load runs at a time; a newer request overtakes a waiting one (whose Future
        is cancelled). The returned Future gives the new engine's name, or the load error; on error the
        current model keeps playing and `model_error` says why."""
        return self.swap.request(spec, backend or self.backend)

    @property
    def model_error(self) -> str:
        """Why the last model asked for is not playing ("" once one is)."""
        return self.swap.error

    def _install(self, engine: Engine) -> None:
        """Engine thread (ModelSwap.swap_in): `engine` plays from the next frame; raises for one it cannot."""
        fx = LatentFX(engine.z_dim, seed=self.fx.seed, plan=engine.latent_plan())  # old cues and smoothing mean nothing here
        old, self.engine, self.fx = self.engine, engine, fx
        self.framer.size = (engine.width, engine.height)  # the source thread fits its next frames to it
        if old is self._hung:
            self._hung = None  # still inside its inference, on the thread left behind: that thread drops it
        else:
            threading.Thread(target=close_quietly, args=(old,), name="model-close", daemon=True).start()

    # ------------------------------------------------------------------------------------- threads
    def _start_engine_thread(self) -> None:
        """A new engine thread; one before it (hung in an inference) stops when it ever comes back."""
        self._engine_generation += 1
        self._engine_thread = native_thread(threading.Thread(
            target=self._engine_loop, args=(self._engine_generation,), name="engine", daemon=True))
        self._engine_thread.start()

    def _engine_loop(self, generation: int) -> None:
        guard = ThreadGuard("engine", self._stats, self.log)
        while not self._stop.is_set() and generation == self._engine_generation:
            pkt = self.in_box.get(timeout=0.1)
            if pkt is None:
                continue
            # what goes out if this iteration fails: the input, composed as after an engine fault
            out = pkt.after_engine(None, 1.0)
            with guard:
                if self.swap.pending:
                    self.swap.swap_in()
                out = self._run_engine(pkt)
            if generation == self._engine_generation:
                self.out_box.put(out)

    def _watch_engine(self, now: float) -> None:
        """Sink thread: an inference running longer than HANG_S means a hung model. Interrupt it where the
        backend can, pass frames through on a fresh engine thread, and wait for another model."""
        busy = self._busy
        if busy is None or busy[0] is self._hung or now - busy[1] < HANG_S:
            return
        engine = busy[0]
        self._hung = engine
        self._stats.engine_faults += 1
        self._stats.last_fault = f"hung for {now - busy[1]:.0f} s"
        interrupted = engine.interrupt()
        self.log(f"engine: {engine.name} has been inside one inference for {now - busy[1]:.0f} s"
                 f"{' (interrupted)' if interrupted else ''}; passing frames through until another model "
                 "is loaded (/model)")
        self._start_engine_thread()

    def _run_engine(self, pkt: Packet) -> Packet:
        """Engine thread: the packet with the model's frame at the model size (`model_output`), None after a
        fault, and this frame's dry/wet."""
        t0 = time.perf_counter()
        p = self.params.snapshot()
        if self.modulate is not None:
            p = self.modulate(p)
        engine = self.engine
        model = None
        if engine is self._hung:  # passthrough until a swap
            return pkt.after_engine(None, p.mix)
        busy = self._busy = (engine, t0)
        framing = None
        try:
            small, framing = pkt.model_input, pkt.framing
            if small is None or small.shape[:2] != (engine.height, engine.width):  # unfitted, or before a swap
                framing = self.framer.framing(pkt.frame, engine.width, engine.height)
                small = framing.apply(pkt.frame, engine.width, engine.height)
            fused = LatentFX.is_identity(p)
            if fused and not self._was_fused:
                self.fx.reset()
            self._was_fused = fused
            model = encode_effects_decode(engine, self.fx, small[None], p)[0]
            if self._fault_streak:
                self.log(f"engine: recovered after {self._fault_streak} faulty frame(s)")
                self._fault_streak = 0
        except Exception as exc:  # noqa: BLE001 - fault isolation: this frame only
            self._stats.engine_faults += 1
            self._stats.last_fault = one_line(exc, typed=True)
            if self._fault_streak == 0:
                self.log(f"engine: {one_line(exc, typed=True)}; passing frames through until it recovers")
            self._fault_streak += 1
        finally:
            if self._busy is busy:
                self._busy = None
        self._stats.engine_ms.add((time.perf_counter() - t0) * 1000.0)
        self._stats.frames_processed += 1
        return pkt.after_engine(model, p.mix, framing)

    def _compose(self, pkt: Packet) -> np.ndarray:
        """Sink thread: the output frame (compose.py), falling back after a fault to the last good frame
        (--on-fault last) or the input; the input's picture is made first, with the frame's own framing."""
        w, h = self.size
        if pkt.model_output is not None:
            wet = self._last_good = upscale(pkt.model_output, w, h)
        elif self.on_fault == "last" and self._last_good is not None:
            wet = self._last_good
        else:  # passthrough: the input is the picture
            return self._input_picture(pkt, w, h)
        size = dry_size(pkt.mix, w, h)
        return compose(wet, self._input_picture(pkt, *size) if size else None, pkt.mix, w, h)

    def _input_picture(self, pkt: Packet, width: int, height: int) -> np.ndarray:
        # a frame that reached no fit (the fit failed on both threads before it) is framed here afresh
        framing = pkt.framing or self.framer.framing(pkt.frame, *self.framer.size)
        return input_picture(pkt.frame, framing, width, height)

    def process(self, frame: np.ndarray) -> np.ndarray:
        """One input frame (any size) -> one output frame, synchronously, through the same three stages as
        the running loop (which must not be running). Never raises for engine faults."""
        return self._compose(self._run_engine(self.feed.packet(frame, time.perf_counter())))

    def _sink_loop(self) -> None:
        guard = ThreadGuard("sink", self._stats, self.log)
        interval = 1.0 / self.fps
        last: Packet | None = None
        shown: np.ndarray | None = None  # the frame the outputs show now
        last_write = time.perf_counter()
        next_overlay = 0.0
        while not self._stop.is_set():
            wait = max(0.0, last_write + 1.5 * interval - time.perf_counter()) if last is not None else 0.1
            if self._duration is not None and self._first_out is not None:  # wake up on time for the end
                wait = min(wait, max(0.0, self._first_out + self._duration - time.perf_counter()))
            pkt = self.out_box.get(timeout=min(wait, 0.1))
            with guard:  # a frame that cannot be composed or written: the outputs keep the last one
                now = time.perf_counter()
                self._watch_engine(now)
                ending = self._duration is not None and self._first_out is not None \
                    and now - self._first_out >= self._duration
                if pkt is None and not ending and (last is None or now - last_write < 1.5 * interval):
                    continue
                if self._first_out is None:
                    self._first_out = now
                elif ending:
                    if shown is not None:  # the last picture stays up to the end: a recording lasts the duration
                        self._write(shown)
                    self._stop.set()
                    break
                if pkt is None:
                    self._stats.frames_repeated += 1
                    pkt = last
                else:
                    pkt.shown = self._compose(pkt)
                    pkt.model_input = pkt.model_output = None  # composed: the model-size frames are done with
                frame = pkt.shown
                if self.overlay:
                    if now >= next_overlay:
                        self._overlay_text = status_line(self.stats())
                        next_overlay = now + 0.5
                    frame = draw_overlay(frame, self._overlay_text)
                self._write(frame)
                shown = frame
                if not pkt.held and last is not pkt:
                    self._stats.latency_ms.add((time.perf_counter() - pkt.t_capture) * 1000.0)
                last, last_write = pkt, now
                self._stats.frames_out += 1
                self._stats.fps_out.tick(now)
                if self._max_frames is not None and self._stats.frames_out >= self._max_frames:
                    self._stop.set()

    def _write(self, frame: np.ndarray) -> None:
        """Sink thread: `frame` to every output, each on its own thread (outputs.py); one that failed or
        blocked is dropped, and the others play on."""
        for fault in self._outputs.write(frame, wait_s=1.0 / self.fps):
            self._drop(fault)
        for s in self.sinks:
            if wants_stop(s):
                self.log(f"output {sink_name(s)} closed; stopping")
                self._stop.set()

    def _drop(self, fault: Fault) -> None:
        self._stats.sink_errors += 1
        self.failed_outputs.append(f"{sink_name(fault.sink)}: {fault.why}")
        self.log(f"output {sink_name(fault.sink)} failed ({fault.detail}); dropping it")
        self.sinks = [s for s in self.sinks if s is not fault.sink]
        if not self.sinks:
            self.log("no outputs left; stopping")
            self._stop.set()
