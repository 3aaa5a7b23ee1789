"""Live-loop measurements: rates, percentiles, counters, and the compact console status line."""

from __future__ import annotations

import collections
import threading
import time

import numpy as np


class RateMeter:
    """Events per second over a sliding window (default 2 s)."""

    def __init__(self, window: float = 2.0) -> None:
        self.window = window
        self._times: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()

    def tick(self, now: float | None = None) -> None:
        now = time.perf_counter() if now is None else now
        with self._lock:
            self._times.append(now)
            self._trim(now)

    def _trim(self, now: float) -> None:
        while self._times and now - self._times[0] > self.window:
            self._times.popleft()

    def rate(self, now: float | None = None) -> float:
        now = time.perf_counter() if now is None else now
        with self._lock:
            self._trim(now)
            n = len(self._times)
            if n < 2:
                return 0.0
            span = max(now - self._times[0], self._times[-1] - self._times[0])
            return (n - 1) / span if span > 0 else 0.0


class Percentiles:
    """The last `size` samples (e.g. milliseconds) and their percentiles."""

    def __init__(self, size: int = 600) -> None:
        self._values: collections.deque[float] = collections.deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, value: float) -> None:
        with self._lock:
            self._values.append(float(value))

    def percentile(self, q: float) -> float:
        with self._lock:
            if not self._values:
                return 0.0
            return float(np.percentile(np.fromiter(self._values, dtype=np.float64), q))

    def __len__(self) -> int:
        return len(self._values)


class RateLimiter:
    """Token bucket: `allow()` lets through at most `fps` events per second on average.

    Tolerant of jitter: a 30 fps camera limited to 30 fps keeps every frame even when one arrives a few
    milliseconds early, while a 60 fps camera limited to 30 fps keeps every other frame.
    """

    def __init__(self, fps: float, burst: float = 1.5) -> None:
        self.fps = fps
        self.burst = burst
        self._tokens = burst
        self._last: float | None = None

    def allow(self, now: float | None = None) -> bool:
        now = time.perf_counter() if now is None else now
        if self._last is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.fps)
        self._last = now
        if self._tokens >= 0.5:
            self._tokens -= 1.0
            return True
        return False


class LoopStats:
    """Counters and meters shared by the live loop's threads (each field is written by one thread, but for
    loop_errors, which every thread's guard counts under a lock)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.fps_in = RateMeter()
        self.fps_out = RateMeter()
        self.engine_ms = Percentiles()
        self.latency_ms = Percentiles()
        self.frames_in = 0  # fresh frames from the source
        self.frames_held = 0  # last good frame re-sent during a source outage
        self.frames_skipped = 0  # source frames above the target fps, not used
        self.frames_processed = 0
        self.frames_out = 0  # frames written to the sinks (each written frame counts once)
        self.frames_repeated = 0  # output frames re-sent because the engine had nothing new
        self.engine_faults = 0
        self.source_outages = 0
        self.source_recoveries = 0
        self.sink_errors = 0
        self.loop_errors = 0  # exceptions a loop thread caught and carried on after (live/loop/guard.py)
        self.last_loop_error = ""
        self._lock = threading.Lock()
        self.source_state = "starting"
        self.last_fault = ""
        self.last_outage = ""
        self.first_frame: float | None = None  # when the first fresh frame came in
        self.stopped: float | None = None  # when the loop stopped: figures taken later are taken as of then

    def count_loop_error(self, what: str) -> None:
        with self._lock:
            self.loop_errors += 1
            self.last_loop_error = what

    def stop(self, now: float | None = None) -> None:
        if self.stopped is None:
            self.stopped = time.perf_counter() if now is None else now

    def snapshot(self, now: float | None = None) -> dict:
        now = time.perf_counter() if now is None else now
        if self.stopped is not None:
            now = min(now, self.stopped)
        return {
            "uptime_s": round(now - self.started, 2),
            "running_s": round(now - self.first_frame, 2) if self.first_frame is not None else 0.0,
            "fps_in": round(self.fps_in.rate(now), 2),
            "fps_out": round(self.fps_out.rate(now), 2),
            "engine_ms_p50": round(self.engine_ms.percentile(50), 2),
            "engine_ms_p99": round(self.engine_ms.percentile(99), 2),
            "latency_ms_p50": round(self.latency_ms.percentile(50), 2),
            "latency_ms_p99": round(self.latency_ms.percentile(99), 2),
            "frames_in": self.frames_in,
            "frames_held": self.frames_held,
            "frames_skipped": self.frames_skipped,
            "frames_processed": self.frames_processed,
            "frames_out": self.frames_out,
            "frames_repeated": self.frames_repeated,
            "engine_faults": self.engine_faults,
            "source_outages": self.source_outages,
            "source_recoveries": self.source_recoveries,
            "sink_errors": self.sink_errors,
            "loop_errors": self.loop_errors,
            "last_loop_error": self.last_loop_error,
            "source_state": self.source_state,
            "last_fault": self.last_fault,
            "last_outage": self.last_outage,
        }


def status_line(s: dict) -> str:
    """One compact console line from a stats() dict."""
    parts = [
        f"in {s['fps_in']:5.1f} fps",
        f"out {s['fps_out']:5.1f} fps",
        f"engine {s['engine_ms_p50']:5.1f}/{s['engine_ms_p99']:5.1f} ms",
        f"latency {s['latency_ms_p50']:5.1f}/{s['latency_ms_p99']:5.1f} ms",
        f"dropped {s.get('dropped', 0)}",
    ]
    if s["engine_faults"]:
        parts.append(f"faults {s['engine_faults']}")
    if s["source_outages"]:
        parts.append(f"outages {s['source_outages']}")
    if s.get("loop_errors"):
        parts.append(f"loop errors {s['loop_errors']}")
    if s["source_state"] != "ok":
        parts.append(f"source {s['source_state']}")
    if s.get("engine_hung"):
        parts.append("model hung: passing through")
    if s.get("model_loading"):
        parts.append("loading model...")
    parts.extend(s.get("output_notes", ()))
    return " | ".join(parts)


def stats_report(s: dict) -> dict:
    """The live loop's figures for scripts, from a Pipeline.stats() dict: what `--stats-json` writes when
    live stops and what the web remote's /api/v1/status serves (one function, so they never differ).

    fps_in/fps_out are over the last 2 s (before the stop, once stopped); the *_avg figures are from the first
    frame in to now (or the stop)."""
    running = float(s.get("running_s", 0.0))
    return {
        "fps_in": s["fps_in"],
        "fps_out": s["fps_out"],
        "fps_in_avg": round(s["frames_in"] / running, 2) if running > 0 else 0.0,
        "fps_out_avg": round(s["frames_out"] / running, 2) if running > 0 else 0.0,
        "engine_ms_p50": s["engine_ms_p50"],
        "engine_ms_p99": s["engine_ms_p99"],
        "latency_ms_p50": s["latency_ms_p50"],
        "latency_ms_p99": s["latency_ms_p99"],
        "frames_in": s["frames_in"],
        "frames_out": s["frames_out"],
        "frames_repeated": s["frames_repeated"],
        "dropped": s.get("dropped", 0),
        "faults": s["engine_faults"],
        "outages": s["source_outages"],
        "sink_errors": s["sink_errors"],
        "loop_errors": s.get("loop_errors", 0),
        "uptime_s": s["uptime_s"],
        "running_s": running,
        "source": s.get("source", ""),
        "sinks": list(s.get("sinks", [])),
        "model": s.get("model", ""),
        "size": s.get("size", ""),
        "target_fps": s.get("target_fps"),
    }
