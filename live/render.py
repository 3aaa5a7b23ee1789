"""Offline render: every frame of a film through the model, in order, none dropped, with its sound.

Frames are decoded on a reader thread (bounded queue: it waits, it never drops), each at its own size
with its timestamp (media/decode.py), run through the engine in batches, upscaled, optionally put beside
the input, and piped to ffmpeg, which also copies the input's audio into the output. The output keeps
the input's frame rate and frame count; a film whose frames come at uneven times (variable frame rate)
keeps real time instead: each frame is held until the next one's time (media/timing.py). A film whose
picture changes size part-way is framed anew from the frame where it changes. It is written to a hidden
`.NAME.*.partial` file and renamed only when complete.

Without ffmpeg the video is written by OpenCV (mp4v) and the audio is left out, with one line saying so.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

from autoencoded.errors import UserError
from autoencoded.fileio import Claim
from autoencoded.live.audio.analysis import analyze_track, signals_at
from autoencoded.live.control.latent import LatentFX
from autoencoded.live.control.modulation import ModMatrix, ModRoute
from autoencoded.live.control.params import Params
from autoencoded.live.engines.base import Engine, EngineFault
from autoencoded.live.io.sources import demo_clip
from autoencoded.live.loop.compose import compose, dry_size, input_picture
from autoencoded.live.loop.model_pass import encode_effects_decode
from autoencoded.media.audio import read_soundtrack
from autoencoded.media.decode import Picture, Pictures
from autoencoded.media.framing import AUTO_CROP_LIMIT, Reframer, for_video
from autoencoded.media.probe import check_decodes, ended_early, probe
from autoencoded.media.timing import Paced, is_uneven, output_rate, packet_times
from autoencoded.media.tools import ffmpeg_path
from autoencoded.media.writers import WriteFailed, check_output_path, open_video_writer, partial_name


def _read_batches(source: Pictures, batch: int, out: queue.Queue, stop: threading.Event) -> None:
    """Reader thread: lists of Pictures, in order, then None (or the exception that ended reading)."""
    try:
        frames: list[Picture] = []
        for picture in source:
            if stop.is_set():
                break
            frames.append(picture)
            if len(frames) == batch:
                _put(out, frames, stop)
                frames = []
        if frames:
            _put(out, frames, stop)
        _put(out, None, stop)
    except BaseException as exc:  # noqa: BLE001 - handed to the main thread
        _put(out, exc, stop)


def _put(q: queue.Queue, item: object, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def render(input_path: str | os.PathLike, output_path: str | os.PathLike, engine: Engine, **options) -> dict:
    """Render `input_path` through `engine` into `output_path` (options: `_render`'s). The output name is
    claimed for the length of the render (fileio.Claim): a second render or live recording into it is
    refused at start instead of one finished file silently replacing the other."""
    with Claim(check_output_path(output_path), "a render"):
        return _render(input_path, output_path, engine, **options)


# long: one reader thread's and one writer's lifetime, and every way out of it stops, aborts or closes them
def _render(input_path: str | os.PathLike, output_path: str | os.PathLike, engine: Engine, *, noise: float = 0.0,
            seed: int = 0, batch: int = 8, side_by_side: bool = False, size: tuple[int, int] | None = None,
            crop: str = "auto", overwrite: bool = False, progress: bool = True, log: Callable[[str], object] = print,
            params: Params | None = None, mods: Sequence[ModRoute] = ()) -> dict:
    """Render `input_path` through `engine` into `output_path`. Returns a summary dict.

    size: the whole output frame (both pictures with side_by_side; each keeps the model's aspect, with black
    bars if the frame's half has another). crop: how the film's picture becomes the model's (framing.py).
    params: the controls (default: `noise` and `seed` alone). mods: modulation routes, fed by the film's own
    soundtrack (audio.*), analysed causally and sampled at each frame's time.

    A film that ends before its declared frame count (or before its declared duration, where the demuxer
    confirms it was cut: Matroska declares no count) leaves the frames rendered in a file whose name says
    partial (NAME.partial.EXT) and raises UserError saying where the input stopped. So does an output that
    fails part-way (a full disk), saying why."""
    src, out, info = _checked_paths(input_path, output_path, overwrite, batch)
    times = packet_times(src)
    rate = output_rate(Fraction(info.rate), times)
    fps, rate_text = float(rate), f"{rate.numerator}/{rate.denominator}"
    if is_uneven(times, rate):
        log(f"timing: {src.name} has {len(times)} frames at uneven times over {times[-1] - times[0] + 1 / fps:.2f} s "
            f"(a variable frame rate): written at {rate_text} fps, each frame held until the next one's time")
    first = for_video(info, crop, engine.width, engine.height)
    log(f"framing: {src.name} {first.describe()}")
    framing = Reframer(first, engine.width, engine.height, AUTO_CROP_LIMIT)
    out_w, h = size or ((2 if side_by_side else 1) * engine.width, engine.height)
    audio_from = _audio_source(src, info, log)
    params = params if params is not None else Params(noise=float(noise), noise_seed=int(seed))
    step = _BatchStep(engine, LatentFX(engine.z_dim, seed=params.noise_seed, plan=engine.latent_plan()), framing, params,
                      _Modulation(src, fps, mods) if mods else None, out_w, h, side_by_side, log)
    source = Pictures(src, "ffmpeg" if ffmpeg_path() else "opencv")
    q: queue.Queue = queue.Queue(maxsize=3)
    stop = threading.Event()
    reader = threading.Thread(target=_read_batches, args=(source, batch, q, stop), name="render-reader", daemon=True)
    writer = open_video_writer(out, out_w, h, fps, rate=rate_text, audio_from=audio_from,
                               audio_codec=info.audio_codec, overwrite=overwrite)
    # a decoded time past the last packet's is a timestamp jump, not a picture held that long
    paced = Paced(writer, rate, end_s=times[-1] - times[0] + 1.0 if times is not None else None)
    bar = _Progress(info.expected_frames, enabled=progress)
    t0 = time.perf_counter()
    reader.start()
    try:
        while True:
            item = q.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            step(item, paced)
            bar.update(step.frames_done)
        paced.finish()
        declared = info.expected_frames
        # a declared count is off by 1 at most; a count estimated from a duration only when the demuxer says so
        stopped_early = bool(declared) and 0 < step.frames_done < declared - 1 and (
            not info.estimated or ended_early(src) is not None)
        partial = partial_name(out) if stopped_early else None
        written = writer.close(to=partial)
    except WriteFailed as exc:  # a full disk: what was written is kept (VideoWriter.salvage), said in one line
        stop.set()
        writer.abort()
        raise UserError(f"{exc} (after {step.frames_done} frames of {src.name})") from None
    except BaseException:
        stop.set()
        writer.abort()
        raise
    finally:
        stop.set()
        source.close()
        bar.close()
        reader.join(timeout=2.0)
    seconds = time.perf_counter() - t0
    frames_done = step.frames_done
    if frames_done == 0:
        raise UserError(f"{src}: no frames could be decoded")
    if partial is not None:
        about = "about " if info.estimated else ""
        raise UserError(f"{src}: the input stopped at frame {frames_done} of its {about}{declared} (damaged or "
                        f"truncated); the {frames_done} frames rendered are in {written}")
    return {"input": str(src), "output": str(written), "frames": frames_done, "fps": fps, "rate": rate_text,
            "written": paced.written, "held": paced.held, "dropped": paced.dropped,
            "size": f"{out_w}x{h}", "audio": audio_from is not None, "seconds": round(seconds, 2),
            "render_fps": round(frames_done / seconds, 2) if seconds > 0 else 0.0,
            "x_realtime": round(paced.written / fps / seconds, 3) if seconds > 0 else 0.0,
            "faults": step.faults, "engine": engine.name, "writer": writer.backend}


def _checked_paths(input_path, output_path, overwrite: bool, batch: int):
    """(source, output, probe) once every refusal that touches nothing has been made: a missing input, an
    output that is the input or exists without --overwrite, a bad batch, a video without a usable rate."""
    src = demo_clip() if str(input_path) == "demo" else Path(input_path)
    if not src.is_file():
        raise UserError(f"{src}: no such video file")
    out = check_output_path(output_path)
    if out.exists() and out.resolve() == src.resolve():
        raise UserError(f"{out}: the output would overwrite the input")
    if out.exists() and not overwrite:
        raise UserError(f"{out} exists; pass --overwrite to replace it")
    if batch < 1:
        raise UserError("--batch must be at least 1")
    info = probe(src)
    check_decodes(src)
    if info.rate is None:
        raise UserError(f"{src}: the video does not state a usable frame rate ({info.fps:g})")
    return src, out, info


def _audio_source(src: Path, info, log: Callable[[str], object]) -> Path | None:
    """The file whose sound the render keeps (the input's), or None; without ffmpeg it says the sound is lost."""
    if info.audio_codec and ffmpeg_path():
        return src
    if (info.audio_codec or not info.audio_known) and not ffmpeg_path():
        log("ffmpeg not found: writing the video without its audio (install ffmpeg to keep the sound)")
    return None


class _BatchStep:
    """One batch of the film through the model and into the writer: framed to the model's size, each frame's
    controls (modulated when routes are given), encode -> effects -> decode, composed as live composes. A
    model that fails on a batch shows those frames' input (counted in `faults`, said once)."""

    def __init__(self, engine: Engine, fx: LatentFX, framing, params: Params, modulation, out_w: int, h: int,
                 side_by_side: bool, log: Callable[[str], object]) -> None:
        self.engine, self.fx, self.framing, self.params, self.modulation = engine, fx, framing, params, modulation
        self.out_w, self.h, self.side_by_side, self.log = out_w, h, side_by_side, log
        self.frames_done = 0
        self.faults = 0

    def __call__(self, item: list[Picture], writer) -> None:
        engine, n = self.engine, len(item)
        framings = [self._framing(p, self.frames_done + j) for j, p in enumerate(item)]
        small = np.stack([f.apply(p.rgb, engine.width, engine.height) for f, p in zip(framings, item, strict=True)])
        frame_params = [self.modulation.params(self.params, self._time(p, self.frames_done + j))
                        for j, p in enumerate(item)] if self.modulation is not None else [self.params] * n
        try:
            model_frames = encode_effects_decode(engine, self.fx, small, frame_params)
        except (EngineFault, RuntimeError, ValueError) as exc:
            self.faults += n
            if self.faults == n:
                self.log(f"warning: the model failed on frames {self.frames_done}-{self.frames_done + n - 1} "
                         f"({exc}); those frames show the input")
            model_frames = small
        for pic, framing, mframe, p in zip(item, framings, model_frames, frame_params, strict=True):
            size = dry_size(p.mix, self.out_w, self.h, self.side_by_side)
            dry = input_picture(pic.rgb, framing, *size) if size else None
            writer.write(compose(mframe, dry, p.mix, self.out_w, self.h, self.side_by_side), pic.time_s)
        self.frames_done += n

    def _framing(self, pic: Picture, index: int):
        """The picture's framing; a size the film has not shown before is framed anew, in one line."""
        h, w = pic.rgb.shape[:2]
        framing, new = self.framing(w, h, pic.sar)
        if new:
            at = f" ({pic.time_s:.2f} s)" if pic.time_s is not None else ""
            self.log(f"framing: from frame {index}{at} the picture changes size: {framing.describe()}")
        return framing

    def _time(self, pic: Picture, index: int) -> float:
        return pic.time_s if pic.time_s is not None else index / self.modulation.fps


class _Modulation:
    """The film's soundtrack as signals, one set per video frame, sampled at the frame's time."""

    def __init__(self, src: Path, fps: float, mods: Sequence[ModRoute]) -> None:
        live_only = sorted({r.signal for r in mods if not r.signal.startswith("audio.")})
        if live_only:
            raise UserError(f"--mod: {', '.join(live_only)} come from a live tempo source (Link, MIDI clock); "
                            "render has the film's soundtrack: audio.* signals")
        track = read_soundtrack(src)
        self.times, self.series, _ = analyze_track(track.samples, track.rate)
        self.offset, self.fps = track.offset_s, fps
        self.matrix = ModMatrix(mods)

    def params(self, base: Params, time_s: float) -> Params:
        signals = signals_at(self.times, self.series, time_s - self.offset)
        return self.matrix.apply(base, signals, 1.0 / self.fps)


class _Progress:
    """A rich progress bar on stderr: frames done of total, frames/s, elapsed and ETA."""

    def __init__(self, total: int | None, enabled: bool) -> None:
        self.bar = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(TextColumn("render"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[fps]}"),
                            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                            console=Console(stderr=True), transient=False)
        self.task = self.bar.add_task("render", total=total, fps="")
        self.t0 = time.perf_counter()
        self.bar.start()

    def update(self, done: int) -> None:
        if self.bar is not None:
            dt = time.perf_counter() - self.t0
            self.bar.update(self.task, completed=done, fps=f"{done / dt:6.1f} fps" if dt > 0 else "")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
