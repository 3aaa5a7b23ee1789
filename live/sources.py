"""Frame sources for the live loop (camera, video file, image folder, demo clip) and the watchdog feed.

A Source is a factory: `open()` returns a Reader whose `read()` gives one uint8 H x W x 3 RGB frame,
or None when it has no more. Open and read may block (a V4L2 camera that was unplugged blocks for
seconds, a network stream forever), so the live loop never calls them itself: `Feed` runs them on a
worker thread and watches frame age and content. When frames stop, stall, freeze or turn to garbage it
keeps sending the last good frame at the target rate, reopens the source with backoff on a fresh worker
(abandoning a stuck one, which closes its own capture when its call returns), and reports the outage and
the recovery.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from autoencoded.errors import UserError

from .boxes import LatestBox, Packet
from .stats import LoopStats, RateLimiter

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_EXTS = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts"}


class Reader(ABC):
    """An opened source: `read()` gives the next RGB frame, or None when none came."""

    @abstractmethod
    def read(self) -> np.ndarray | None:
        """The next frame (uint8 H x W x 3 RGB), or None."""

    def close(self) -> None:  # noqa: B027 (most readers hold nothing to release)
        """Release the device or file."""


class Source(ABC):
    """Where frames come from. `camera` sources are live (never paced by us, frozen frames are faults)."""

    name = "source"
    fps = 30.0
    camera = False

    @abstractmethod
    def open(self) -> Reader:
        """Open the device or file; raises on failure (the feed retries with backoff)."""


def _video_fps(cap, default: float = 30.0) -> float:
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    return fps if 1.0 <= fps <= 240.0 else default


def _bgr_to_rgb(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    if frame.ndim == 3 and frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    if frame.ndim == 3 and frame.shape[2] == 3:
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    return frame  # something else: the feed's content check reports it as garbage


class _CaptureReader(Reader):
    def __init__(self, cap) -> None:
        self.cap = cap

    def read(self) -> np.ndarray | None:
        ok, frame = self.cap.read()
        if not ok or frame is None:
            return None
        return _bgr_to_rgb(frame)

    def close(self) -> None:
        cap, self.cap = self.cap, None
        if cap is not None:
            cap.release()


class CameraSource(Source):
    """An OpenCV camera by index or device path, asking for a size and frame rate."""

    camera = True

    def __init__(self, device: int | str = 0, width: int | None = 1280, height: int | None = 720,
                 fps: float | None = 30.0, capture_factory: Callable = cv2.VideoCapture) -> None:
        self.device = device
        self.width, self.height = width, height
        self.fps = float(fps or 30.0)
        self.capture_factory = capture_factory
        self.name = f"camera {device}"

    def open(self) -> Reader:
        cap = self.capture_factory(self.device)
        if not cap.isOpened():
            cap.release()
            raise OSError(f"cannot open {self.name}")
        # MJPG first: most webcams give 720p30 only in MJPG; small buffer for low latency
        cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"MJPG"))
        if self.width and self.height:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        if self.fps:
            cap.set(cv2.CAP_PROP_FPS, self.fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return _CaptureReader(cap)


class _LoopingFileReader(Reader):
    def __init__(self, path: Path, loop: bool) -> None:
        self.path, self.loop = path, loop
        self.cap = cv2.VideoCapture(str(path))
        if not self.cap.isOpened():
            raise OSError(f"cannot open video {path}")

    def read(self) -> np.ndarray | None:
        ok, frame = self.cap.read()
        if not ok and self.loop:
            # back to the start by reopening: seeking is unreliable on some containers
            self.cap.release()
            self.cap = cv2.VideoCapture(str(self.path))
            ok, frame = self.cap.read()
        if not ok or frame is None:
            return None
        return _bgr_to_rgb(frame)

    def close(self) -> None:
        self.cap.release()


class VideoFileSource(Source):
    """A video file, played at its own frame rate, looping when `loop` (the live default)."""

    def __init__(self, path: str | os.PathLike, loop: bool = True) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"{self.path}: no such video file")
        cap = cv2.VideoCapture(str(self.path))
        try:
            ok = cap.isOpened() and cap.read()[0]
            self.fps = _video_fps(cap)
        finally:
            cap.release()
        if not ok:
            raise UserError(f"{self.path}: cannot decode any frame (not a video, or damaged)")
        self.loop = loop
        self.name = f"file {self.path.name}"

    def open(self) -> Reader:
        return _LoopingFileReader(self.path, self.loop)


class _FolderReader(Reader):
    def __init__(self, files: list[Path], loop: bool) -> None:
        self.files, self.loop, self.i = files, loop, 0
        self.unreadable = 0

    def read(self) -> np.ndarray | None:
        misses = 0
        while misses < len(self.files):
            if self.i >= len(self.files):
                if not self.loop:
                    return None
                self.i = 0
            path = self.files[self.i]
            self.i += 1
            img = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if img is not None:
                return _bgr_to_rgb(img)
            misses += 1
            self.unreadable += 1
        return None


class ImageFolderSource(Source):
    """The images of a folder in name order, shown at `fps`, looping when `loop`."""

    def __init__(self, path: str | os.PathLike, fps: float = 30.0, loop: bool = True) -> None:
        self.path = Path(path)
        self.files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_EXTS)
        if not self.files:
            raise UserError(f"{self.path}: no images in this folder ({', '.join(sorted(IMAGE_EXTS))})")
        self.fps, self.loop = float(fps), loop
        self.name = f"folder {self.path.name} ({len(self.files)} images)"

    def open(self) -> Reader:
        return _FolderReader(self.files, self.loop)


def demo_clip() -> Path:
    from . import assets

    if not assets.DEMO_CLIP.is_file():
        raise UserError(f"the demo clip is missing ({assets.DEMO_CLIP}); pass --input FILE or a camera")
    return assets.DEMO_CLIP


def parse_camera(spec: str) -> int | str | None:
    """'camera', 'camera:1', '/dev/video2', 'video=...' -> a device for OpenCV; None if not a camera."""
    if spec == "camera":
        return 0
    if spec.startswith("camera:"):
        dev = spec.split(":", 1)[1]
        if dev.isdigit():
            return int(dev)
        if not dev:
            raise UserError(f"--input {spec}: give a camera index or device path after 'camera:'")
        return dev
    if spec.startswith("/dev/video"):
        return spec
    return None


def open_source(spec: str, width: int = 1280, height: int = 720, fps: float = 30.0,
                capture_factory: Callable = cv2.VideoCapture) -> Source:
    """An --input value -> a Source. Bad values raise UserError naming the value."""
    cam = parse_camera(spec)
    if cam is not None:
        if isinstance(cam, str) and cam.startswith("/dev/") and not Path(cam).exists():
            raise UserError(f"--input {spec}: no such device")
        return CameraSource(cam, width, height, fps, capture_factory=capture_factory)
    if spec == "demo":
        return VideoFileSource(demo_clip())
    p = Path(spec)
    if p.is_dir():
        return ImageFolderSource(p, fps=fps)
    if p.is_file():
        return VideoFileSource(p)
    raise UserError(f"--input {spec}: not a camera (camera:N, /dev/videoN), 'demo', a video file or a folder")


def check_frame(frame: object) -> str | None:
    """None for a usable frame, else why it is not."""
    if frame is None:
        return "stopped delivering frames"
    if not isinstance(frame, np.ndarray):
        return f"returned garbage ({type(frame).__name__}, not an image)"
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] < 2 or frame.shape[1] < 2:
        return f"returned garbage (shape {frame.shape})"
    if frame.dtype != np.uint8:
        return f"returned garbage (dtype {frame.dtype})"
    return None


def probe(source: Source, timeout: float = 2.0) -> bool:
    """True when `source` opens and gives a usable frame within `timeout` (on a worker; never hangs)."""
    result: list[bool] = []

    def attempt() -> None:
        reader = None
        try:
            reader = source.open()
            result.append(check_frame(reader.read()) is None)
        except Exception:
            result.append(False)
        finally:
            if reader is not None:
                reader.close()

    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # "no camera" is an answer, not an error
    try:
        t = threading.Thread(target=attempt, name="probe-source", daemon=True)
        t.start()
        t.join(timeout)
    finally:
        cv2.utils.logging.setLogLevel(level)
    return bool(result and result[0])


class Feed:
    """Runs a Source for the live loop and puts Packets into `box`, at most `fps` per second.

    - reads on a worker thread; file and folder sources are paced to their own frame rate;
    - watchdog: no frame for `stall_timeout` s, no open within `open_timeout` s, a read that fails or
      returns garbage, or (cameras) the very same frame for `repeat_timeout` s start an outage;
    - during an outage the last good frame is re-sent at `fps` (flagged `held`), and the source is
      reopened on a new worker after 0.25 s, 0.5 s, 1 s, ... up to `max_backoff` s;
    - the first good frame ends the outage; both ends are logged and kept in `self.outages`.
    """

    def __init__(self, source: Source, box: LatestBox, fps: float = 30.0, stats: LoopStats | None = None,
                 log: Callable[[str], None] = print, open_timeout: float = 5.0, stall_timeout: float = 1.0,
                 repeat_timeout: float | None = None, min_backoff: float = 0.25, max_backoff: float = 5.0,
                 prepare: Callable[[np.ndarray], dict] | None = None) -> None:
        self.source, self.box, self.fps = source, box, float(fps)
        # per-frame work done here, in parallel with the engine (the pipeline fits frames to the model)
        self.prepare = prepare
        self.stats = stats or LoopStats()
        self.log = log
        self.open_timeout = open_timeout
        self.stall_timeout = max(stall_timeout, 3.0 / max(source.fps, 1e-3))
        self.repeat_timeout = repeat_timeout if repeat_timeout is not None else (2.0 if source.camera else 0.0)
        self.min_backoff, self.max_backoff = min_backoff, max_backoff
        self.outages: list[dict] = []
        self.reopens = 0
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
                self._raw.put(("error", time.perf_counter(), f"failed to open ({_one_line(exc)})"))
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
                        self._raw.put(("error", time.perf_counter(), f"read failed ({_one_line(exc)})"))
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
            try:
                reader.close()
            except Exception:
                pass

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

    def _publish(self, frame: np.ndarray, t: float, held: bool, meta: dict | None = None) -> dict:
        if meta is None:
            meta = self.prepare(frame) if self.prepare is not None else {}
        self._index += 1
        self.box.put(Packet(frame=frame, t_capture=t, index=self._index, held=held, meta=meta))
        return meta

    def _run(self) -> None:
        interval = 1.0 / self.fps
        limiter = RateLimiter(self.fps)
        last_good: np.ndarray | None = None
        last_meta: dict | None = None  # prepare(last_good), reused while it is held
        last_sig: np.ndarray | None = None
        last_change = last_fresh = open_started = time.perf_counter()
        opened = False
        backoff = self.min_backoff
        next_reopen: float | None = None
        next_hold = 0.0
        self.stats.source_state = "opening"
        self._start_reader()
        while not self._stop.is_set():
            ev = self._raw.get(timeout=min(interval, 0.05))
            now = time.perf_counter()
            problem = None
            if ev is not None:
                kind, t, payload = ev
                if kind == "opened":
                    opened, last_fresh, last_change = True, now, now
                    if not self.in_outage:
                        self.stats.source_state = "ok"
                elif kind == "error":
                    problem = payload
                else:
                    problem = check_frame(payload)
                    if problem is None and self.repeat_timeout:
                        sig = payload[::7, ::7]
                        if last_sig is not None and sig.shape == last_sig.shape and np.array_equal(sig, last_sig):
                            if now - last_change > self.repeat_timeout:
                                problem = f"frozen (the same frame for {self.repeat_timeout:g} s)"
                            elif self.in_outage:
                                problem = "frozen"
                        else:
                            last_change = now
                        last_sig = sig.copy()
                    if problem is None:
                        if self.in_outage:
                            self._recovered(now)
                        backoff, next_reopen = self.min_backoff, None
                        self.stats.source_state = "ok"
                        last_good, last_meta, last_fresh = payload, None, now
                        self.stats.frames_in += 1
                        self.stats.fps_in.tick(now)
                        if limiter.allow(now):
                            last_meta = self._publish(payload, t, held=False)
                        else:
                            self.stats.frames_skipped += 1
                        continue
            elif not opened and now - open_started > self.open_timeout:
                problem = f"did not open within {self.open_timeout:g} s"
            elif opened and now - last_fresh > self.stall_timeout:
                problem = f"stalled (no frame for {self.stall_timeout:g} s)"

            if problem is not None:
                if not self.in_outage:
                    self._outage(problem, now)
                    next_hold = now
                else:
                    self.outages[-1]["reason"] = problem
                if next_reopen is None:
                    next_reopen = now + backoff
                    backoff = min(backoff * 2, self.max_backoff)
            if self.in_outage:
                if last_good is not None and now >= next_hold:
                    last_meta = self._publish(last_good, now, held=True, meta=last_meta)
                    self.stats.frames_held += 1
                    next_hold = max(next_hold + interval, now - interval)
                if next_reopen is not None and now >= next_reopen:
                    self.reopens += 1
                    self.outages[-1]["reopens"] += 1
                    opened, open_started, last_fresh = False, now, now
                    next_reopen = None
                    self._start_reader()
        self.stats.source_state = "stopped"

    def _outage(self, reason: str, now: float) -> None:
        self.outages.append({"start": now, "end": None, "reason": reason, "first_reason": reason, "reopens": 0})
        self.stats.source_outages += 1
        self.stats.last_outage = reason
        self.stats.source_state = f"outage: {reason}"
        self.log(f"source {self.source.name}: {reason}; holding the last frame and reopening")

    def _recovered(self, now: float) -> None:
        o = self.outages[-1]
        o["end"] = now
        self.stats.source_recoveries += 1
        self.log(f"source {self.source.name}: recovered after {now - o['start']:.1f} s "
                 f"({o['reopens']} reopen{'s' if o['reopens'] != 1 else ''})")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160]}" if text else type(exc).__name__


def has_display() -> bool:
    """Whether a preview window can be opened here."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True
