"""Frame sources for the live loop (camera, video file, image folder, demo clip).

A Source is a factory: `open()` returns a Reader whose `read()` gives one uint8 H x W x 3 RGB frame,
or None when it has no more. Open and read may block (a V4L2 camera that was unplugged blocks for
seconds, a network stream forever), so the live loop never calls them itself: `autoencoded.live.loop.feed`
runs them on a worker thread and watches them.
"""

from __future__ import annotations

import os
import stat
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from autoencoded.errors import UserError
from autoencoded.media.framing import Box, detect_bars, sample_frames
from autoencoded.media.probe import probe as probe_video
from autoencoded.media.tools import have_ffmpeg
from autoencoded.text import printable

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
    sar = 1.0  # a pixel's width over its height (files may have non-square pixels)
    bars: Box | None = None  # the picture inside black letterbox/pillarbox bars, once find_bars() found some

    @property
    def freeze_check(self) -> bool:
        """Whether the very same frame for a while means the device froze (cameras do that when they fail)."""
        return self.camera

    @abstractmethod
    def open(self) -> Reader:
        """Open the device or file; raises on failure (the feed retries with backoff)."""

    def find_bars(self) -> None:  # noqa: B027 - cameras and image folders have no bars to find
        """Look for black bars around the picture (for --crop auto), setting `bars`."""


class CameraClock:
    """Paces a synthetic reader like a camera: `wait()` sleeps until the next frame is due at `fps`; a reader
    that fell behind starts the clock again from now instead of bursting to catch up."""

    def __init__(self, fps: float) -> None:
        self.period = 1.0 / fps
        self.next_t = time.perf_counter()

    def wait(self) -> None:
        self.next_t += self.period
        delay = self.next_t - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        else:
            self.next_t = time.perf_counter()


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


def open_capture(device: int | str):
    """An OpenCV capture of a camera. On Linux through V4L2 only: with any backend OpenCV also asks its
    Orbbec driver, which prints an ERROR line on every attempt for a camera that is not there (and the
    live loop retries a missing camera every few seconds)."""
    if sys.platform.startswith("linux"):
        return cv2.VideoCapture(device, cv2.CAP_V4L2)
    return cv2.VideoCapture(device)


class CameraSource(Source):
    """An OpenCV camera by index or device path, asking for a size and frame rate."""

    camera = True

    def __init__(self, device: int | str = 0, width: int | None = 1280, height: int | None = 720,
                 fps: float | None = 30.0, capture_factory: Callable = open_capture) -> None:
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


class VideoFileReader(Reader):
    """An opened video file: frames in order, from the start again at the end when `loop`."""

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
        self.info = probe_video(self.path)
        self.sar = self.info.sar
        self.loop = loop
        self.name = f"file {self.path.name}"

    def find_bars(self) -> None:
        self.bars = detect_bars(sample_frames(self.info, "ffmpeg" if have_ffmpeg() else "opencv"),
                                (self.info.width, self.info.height))

    def open(self) -> Reader:
        return VideoFileReader(self.path, self.loop)


def is_regular(path: Path) -> bool:
    """A regular file (through symlinks): a FIFO, a device or a socket named like an image would block or
    never end when read, and a folder is not an image."""
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except (OSError, ValueError):  # gone, a symlink loop, a name the OS refuses
        return False


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
            # checked again at each read: a file may be replaced by a FIFO while the show runs
            img = cv2.imread(str(path), cv2.IMREAD_COLOR) if is_regular(path) else None
            if img is not None:
                return _bgr_to_rgb(img)
            misses += 1
            self.unreadable += 1
        return None


class ImageFolderSource(Source):
    """The images of a folder in name order, shown at `fps`, looping when `loop`."""

    def __init__(self, path: str | os.PathLike, fps: float = 30.0, loop: bool = True) -> None:
        self.path = Path(path)
        named = [p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_EXTS]
        self.files = sorted(p for p in named if is_regular(p))
        if not self.files:
            others = f" ({len(named)} named like one, none a regular file)" if named else ""
            raise UserError(f"{self.path}: no images in this folder{others} ({', '.join(sorted(IMAGE_EXTS))})")
        self.fps, self.loop = float(fps), loop
        self.name = f"folder {self.path.name} ({len(self.files)} images)"

    def open(self) -> Reader:
        return _FolderReader(self.files, self.loop)


def demo_clip() -> Path:
    from autoencoded.live import assets

    if not assets.DEMO_CLIP.is_file():
        raise UserError(f"the demo clip is missing ({assets.DEMO_CLIP}); pass --input FILE or a camera")
    return assets.DEMO_CLIP


MAX_CAMERA_INDEX = 99


def parse_camera(spec: str) -> int | str | None:
    """'camera', 'camera:1', 'camera:/dev/video2', '/dev/video2' -> a device for OpenCV; None if not a camera.
    Anything else after 'camera:' is one UserError line (the text escaped)."""
    if spec == "camera":
        return 0
    if spec.startswith("camera:"):
        dev = spec.split(":", 1)[1]
        if dev.isascii() and dev.isdigit() and int(dev) <= MAX_CAMERA_INDEX:
            return int(dev)
        if dev.startswith("/dev/") and dev.isprintable() and dev.isascii() and " " not in dev:
            return dev
        raise UserError(f"--input {printable(spec)}: after 'camera:' give a camera index 0..{MAX_CAMERA_INDEX} "
                        "or a device path (/dev/video2)")
    if spec.startswith("/dev/video"):
        return spec
    return None


def open_source(spec: str, width: int = 1280, height: int = 720, fps: float = 30.0,
                capture_factory: Callable = open_capture) -> Source:
    """An --input value -> a Source. Bad values raise UserError naming the value."""
    cam = parse_camera(spec)
    if cam is not None:
        if isinstance(cam, str) and cam.startswith("/dev/") and not Path(cam).exists():
            raise UserError(f"--input {printable(spec)}: no such device")
        return CameraSource(cam, width, height, fps, capture_factory=capture_factory)
    if spec == "demo":
        return VideoFileSource(demo_clip())
    if spec.startswith("ndi:"):
        from autoencoded.live.io.ndi import NdiSource

        return NdiSource(spec[4:], fps=fps)
    if spec == "probe":
        from autoencoded.live.io.latency_probe import ProbeSource

        return ProbeSource(width, height, fps)
    p = Path(spec)
    if p.is_dir():
        return ImageFolderSource(p, fps=fps)
    if is_regular(p):
        return VideoFileSource(p)
    kinds = "camera:N, /dev/videoN, ndi:NAME, demo, probe, a video file or a folder"
    if not os.path.lexists(p):
        raise UserError(f"--input {printable(spec)}: no such file or folder (an input is {kinds})")
    what = "a broken symlink or a symlink loop" if p.is_symlink() and not p.exists() else "not a regular file"
    raise UserError(f"--input {printable(spec)}: {what} (an input is {kinds})")


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


def has_display() -> bool:
    """Whether a preview window can be opened here."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True
