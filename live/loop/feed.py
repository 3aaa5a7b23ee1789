"""The watchdog feed: runs a Source on a worker thread for the live loop and watches frame age and content.

When frames stop, stall, freeze or turn to garbage it keeps sending the last good frame at the target
rate, reopens the source with backoff on a fresh worker (abandoning a stuck one, which closes its own
capture when its call returns), and reports the outage and the recovery.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from autoencoded.errors import close_quietly, one_line
from autoencoded.live.io.sources import Source, check_frame
from autoencoded.live.loop.boxes import LatestBox, Packet
from autoencoded.live.loop.framer import Framer
from autoencoded.live.loop.guard import ThreadGuard
from autoencoded.live.loop.stats import LoopStats, RateLimiter
from autoencoded.media.framing import Framing


@dataclass
class _Watch:
    """The watchdog's state from one event to the next (the source thread's alone)."""

    last_change: float  # when the picture last changed (a camera's freeze check)
    last_fresh: float  # when the last good frame (or the open) came
    open_started: float  # when the current open attempt began
    backoff: float  # the wait before the next reopen, doubled each time
    opened: bool = False
    last_good: np.ndarray | None = None
    last_fit: tuple[np.ndarray, Framing] | None = None  # the framer's fit of last_good, reused while it is held
    last_sig: np.ndarray | None = None  # a sparse sample of the last frame, to see it repeat
    next_reopen: float | None = None
    next_hold: float = 0.0


class Feed:
    """Runs a Source for the live loop and puts Packets into `box`, at most `fps` per second.

    - reads on a worker thread; file and folder sources are paced to their own frame rate;
    - watchdog: no frame for `stall_timeout` s, no open within `open_timeout` s, a read that fails or
      returns garbage, or (cameras, `source.freeze_check`) the very same frame for `repeat_timeout` s start an outage;
    - during an outage the last good frame is re-sent at `fps` (flagged `held`), and the source is
      reopened on a new worker after 0.25 s, 0.5 s, 1 s, ... up to `max_backoff` s;
    - the first good frame ends the outage; both ends are logged and kept in `self.outages`;
    - anything else that goes wrong in the watchdog is caught by `guard` (live/loop/guard.py), counted, and
      the watchdog carries on with the next event.
    """

    def __init__(self, source: Source, box: LatestBox, fps: float = 30.0, stats: LoopStats | None = None,
                 log: Callable[[str], None] = print, open_timeout: float = 5.0, stall_timeout: float = 1.0,
                 repeat_timeout: float | None = None, min_backoff: float = 0.25, max_backoff: float = 5.0,
                 framer: Framer | None = None, guard: ThreadGuard | None = None) -> None:
        self.source, self.box, self.fps = source, box, float(fps)
        self.framer = framer  # fits each frame to the model here, in parallel with the engine (Packet.model_input)
        self.stats = stats or LoopStats()
        self.log = log
        self.guard = guard or ThreadGuard("source", self.stats, log)
        self.open_timeout = open_timeout
        self.stall_timeout = max(stall_timeout, 3.0 / max(source.fps, 1e-3))
        self.repeat_timeout = repeat_timeout if repeat_timeout is not None else (2.0 if source.freeze_check else 0.0)
        self.min_backoff, self.max_backoff = min_backoff, max_backoff
        self.outages: list[dict] = []
        self.reopens = 0
        self.ever_opened = False  # a source that never opened is the show's failure (live exits 1)
        self._raw = LatestBox()
        self._gen = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._readers: list[threading.Thread] = []
        self._index = 0

    # ---- the reader worker (one per open attempt; a stuck one is abandoned) ----
    def _reader_loop(self, gen: int) -> None:
        try:
            reader = self.source.open()
        except Exception as exc:
            if gen == self._gen and not self._stop.is_set():
                self._raw.put(("error", time.perf_counter(), f"failed to open ({one_line(exc, typed=True)})"))
            return
        try:
            if gen != self._gen or self._stop.is_set():
                return
            self._raw.put(("opened", time.perf_counter(), None))
            period = 0.0 if self.source.camera else 1.0 / max(self.source.fps, 1e-3)
            next_t = time.perf_counter()
            while gen == self._gen and not self._stop.is_set():
                try:
                    frame = reader.read()
                except Exception as exc:
                    if gen == self._gen:
                        self._raw.put(("error", time.perf_counter(), f"read failed ({one_line(exc, typed=True)})"))
                    return
                t = time.perf_counter()
                if gen != self._gen or self._stop.is_set():
                    return
                self._raw.put(("frame", t, frame))
                if frame is None:
                    return
                if period:
                    next_t += period
                    delay = next_t - time.perf_counter()
                    if delay > 0:
                        self._stop.wait(delay)
                    elif delay < -period:
                        next_t = time.perf_counter()
        finally:
            close_quietly(reader)

    def _start_reader(self) -> None:
        self._gen += 1
        self._raw = LatestBox()  # events of abandoned readers can no longer reach the watchdog
        t = threading.Thread(target=self._reader_loop, args=(self._gen,), name=f"source-reader-{self._gen}",
                             daemon=True)
        self._readers = [r for r in self._readers if r.is_alive()] + [t]
        t.start()

    # ---- the watchdog (the live loop's source thread) ----
    def start(self) -> Feed:
        self._thread = threading.Thread(target=self._run, name="source", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 0.5) -> None:
        self._stop.set()
        self._raw.close()
        deadline = time.monotonic() + timeout
        for t in [self._thread, *self._readers]:
            if t is not None and t is not threading.current_thread():
                t.join(max(0.0, deadline - time.monotonic()))

    @property
    def in_outage(self) -> bool:
        return bool(self.outages) and self.outages[-1]["end"] is None

    def packet(self, frame: np.ndarray, t: float, held: bool = False,
               fit: tuple[np.ndarray, Framing] | None = None) -> Packet:
        """`frame` as the engine thread takes it: fitted to the model here (`fit`: a held frame's, reused),
        unless that fails; the engine thread then fits it itself, and counts the fault if it fails there too."""
        if fit is None and self.framer is not None:
            try:
                fit = self.framer.fit(frame)
            except Exception:  # noqa: BLE001 - an optimisation only
                fit = None
        model_input, framing = fit or (None, None)
        self._index += 1
        return Packet(frame=frame, t_capture=t, index=self._index, held=held, model_input=model_input,
                      framing=framing)

    def _publish(self, frame: np.ndarray, t: float, held: bool,
                 fit: tuple[np.ndarray, Framing] | None = None) -> tuple[np.ndarray, Framing] | None:
        """Hand `frame` to the engine; returns its fit to reuse while it is held."""
        pkt = self.packet(frame, t, held, fit)
        self.box.put(pkt)
        return (pkt.model_input, pkt.framing) if pkt.model_input is not None else None

    def _run(self) -> None:
        interval = 1.0 / self.fps
        limiter = RateLimiter(self.fps)
        now = time.perf_counter()
        w = _Watch(last_change=now, last_fresh=now, open_started=now, backoff=self.min_backoff)
        self.stats.source_state = "opening"
        self._start_reader()
        while not self._stop.is_set():
            ev = self._raw.get(timeout=min(interval, 0.05))
            with self.guard:
                now = time.perf_counter()
                if ev is not None and ev[0] == "frame":
                    if not w.opened:
                        # the one-slot box keeps only the newest event: a first frame put before the watchdog
                        # took "opened" replaced it, and the open must not then time out while frames flow
                        self._opened(w, now)
                    problem = self._frame_problem(w, ev[2], now)
                    if problem is None:
                        self._take(w, ev[2], ev[1], now, limiter)
                        continue
                elif ev is not None:
                    problem = self._opened_or_failed(w, ev, now)
                else:
                    problem = self._silence(w, now)
                if problem is not None:
                    self._trouble(w, problem, now)
                if self.in_outage:
                    self._hold_and_reopen(w, now, interval)
        self.stats.source_state = "stopped"

    def _opened_or_failed(self, w: _Watch, ev: tuple, now: float) -> str | None:
        """An "opened" or "error" event from the reader -> the problem it is (None: opened)."""
        kind, _, payload = ev
        if kind == "error":
            return payload
        self._opened(w, now)
        return None

    def _opened(self, w: _Watch, now: float) -> None:
        w.opened, w.last_fresh, w.last_change = True, now, now
        self.ever_opened = True
        if not self.in_outage:
            self.stats.source_state = "ok"

    def _frame_problem(self, w: _Watch, frame: object, now: float) -> str | None:
        """What is wrong with a frame the reader gave (garbage, frozen), None when it is good."""
        problem = check_frame(frame)
        if problem is None and self.repeat_timeout:
            sig = frame[::7, ::7]
            if w.last_sig is not None and sig.shape == w.last_sig.shape and np.array_equal(sig, w.last_sig):
                if now - w.last_change > self.repeat_timeout:
                    problem = f"frozen (the same frame for {self.repeat_timeout:g} s)"
                elif self.in_outage:
                    problem = "frozen"
            else:
                w.last_change = now
            w.last_sig = sig.copy()
        return problem

    def _take(self, w: _Watch, frame: np.ndarray, t: float, now: float, limiter: RateLimiter) -> None:
        """A good frame: the outage (if any) is over; it goes to the engine unless over the rate."""
        if self.in_outage:
            self._recovered(now)
        w.backoff, w.next_reopen = self.min_backoff, None
        self.stats.source_state = "ok"
        w.last_good, w.last_fit, w.last_fresh = frame, None, now
        self.stats.frames_in += 1
        if self.stats.first_frame is None:
            self.stats.first_frame = now
        self.stats.fps_in.tick(now)
        if limiter.allow(now):
            w.last_fit = self._publish(frame, t, held=False)
        else:
            self.stats.frames_skipped += 1

    def _silence(self, w: _Watch, now: float) -> str | None:
        """No event came: the problem when the source has been silent too long (opening or stalled)."""
        if not w.opened and now - w.open_started > self.open_timeout:
            return f"did not open within {self.open_timeout:g} s"
        if w.opened and now - w.last_fresh > self.stall_timeout:
            return f"stalled (no frame for {self.stall_timeout:g} s)"
        return None

    def _trouble(self, w: _Watch, problem: str, now: float) -> None:
        """Start an outage (or say its latest reason) and schedule a reopen with backoff."""
        if not self.in_outage:
            self._outage(problem, now, holding=w.last_good is not None)
            w.next_hold = now
        else:
            self.outages[-1]["reason"] = problem
        if w.next_reopen is None:
            w.next_reopen = now + w.backoff
            w.backoff = min(w.backoff * 2, self.max_backoff)

    def _hold_and_reopen(self, w: _Watch, now: float, interval: float) -> None:
        """During an outage: the last good frame again at the target rate, and a reopen when it is due."""
        if w.last_good is not None and now >= w.next_hold:
            w.last_fit = self._publish(w.last_good, now, held=True, fit=w.last_fit)
            self.stats.frames_held += 1
            w.next_hold = max(w.next_hold + interval, now - interval)
        if w.next_reopen is not None and now >= w.next_reopen:
            self.reopens += 1
            self.outages[-1]["reopens"] += 1
            w.opened, w.open_started, w.last_fresh = False, now, now
            w.next_reopen = None
            self._start_reader()

    def _outage(self, reason: str, now: float, holding: bool = True) -> None:
        self.outages.append({"start": now, "end": None, "reason": reason, "first_reason": reason, "reopens": 0})
        self.stats.source_outages += 1
        self.stats.last_outage = reason
        self.stats.source_state = f"outage: {reason}"
        doing = "holding the last frame and reopening" if holding else "retrying (nothing to show until it opens)"
        self.log(f"source {self.source.name}: {reason}; {doing}")

    def _recovered(self, now: float) -> None:
        o = self.outages[-1]
        o["end"] = now
        self.stats.source_recoveries += 1
        self.log(f"source {self.source.name}: recovered after {now - o['start']:.1f} s "
                 f"({o['reopens']} reopen{'s' if o['reopens'] != 1 else ''})")
