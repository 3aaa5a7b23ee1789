"""Where frames go: a virtual camera, a preview window, a video file, or nowhere (benchmarks).

Every sink takes uint8 H x W x 3 RGB frames at the size given to `open`. Video files are written to a
hidden `.NAME.*.partial` file beside the target and renamed only when complete, so an interrupted
recording or render never leaves a file that looks finished. H.264 goes through an ffmpeg subprocess
(OpenCV's wheel cannot write it); without ffmpeg, OpenCV writes mp4v (MJPG for .avi).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from autoencoded.errors import UserError
from autoencoded.live.io.sources import has_display

# extension -> (ffmpeg container, ffmpeg video codec args, audio codecs it can take as they are)
CONTAINERS: dict[str, tuple[str, str, set[str] | None]] = {
    ".mp4": ("mp4", "h264", {"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac"}),
    ".m4v": ("mp4", "h264", {"aac", "mp3", "alac", "ac3", "eac3"}),
    ".mov": ("mov", "h264", {"aac", "mp3", "alac", "ac3", "eac3", "pcm_s16le", "pcm_s24le"}),
    ".mkv": ("matroska", "h264", None),  # None: takes anything
    ".avi": ("avi", "mjpeg", {"mp3", "ac3", "pcm_s16le"}),
}


def supported_extensions() -> str:
    return ", ".join(CONTAINERS)


@functools.lru_cache(maxsize=1)
def ffmpeg_path() -> str | None:
    return shutil.which("ffmpeg")


@functools.lru_cache(maxsize=1)
def _has_encoder(name: str) -> bool:
    exe = ffmpeg_path()
    if not exe:
        return False
    try:
        out = subprocess.run([exe, "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return any(line.split()[1:2] == [name] for line in out.splitlines() if line.startswith(" "))


def _partial_path(final: Path, suffix: str = ".partial") -> Path:
    """A new hidden temp file beside `final`, with the permissions a normally created file would get."""
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=suffix, dir=final.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return Path(tmp)


class VideoWriter(ABC):
    """Writes frames to a partial file; `close()` finishes it and renames it to `path`, `abort()` deletes it."""

    backend = "none"
    tmp: Path

    def __init__(self, path: Path, width: int, height: int) -> None:
        self.path, self.width, self.height = path, width, height
        self.frames = 0

    @abstractmethod
    def write(self, frame: np.ndarray) -> None:
        """Append one uint8 RGB frame at the writer's size."""

    @abstractmethod
    def close(self) -> None:
        """Finish the file and rename it to `path`."""

    @abstractmethod
    def abort(self) -> None:
        """Stop and delete the partial file."""

    def _remove_tmp(self) -> None:
        try:
            self.tmp.unlink()
        except FileNotFoundError:
            pass

    def _check(self, frame: np.ndarray) -> np.ndarray:
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(f"frame {frame.shape} {frame.dtype} does not match the video "
                             f"({self.width}x{self.height} uint8 RGB)")
        return np.ascontiguousarray(frame)


class FfmpegWriter(VideoWriter):
    """rawvideo on stdin -> H.264 (or MJPEG for .avi) via an ffmpeg subprocess; optional audio from a file."""

    def __init__(self, path: Path, width: int, height: int, rate: str | float,
                 audio_from: Path | None = None, audio_codec: str | None = None, crf: int = 18) -> None:
        super().__init__(path, width, height)
        container, vcodec, audio_ok = CONTAINERS[path.suffix.lower()]
        if vcodec == "h264" and _has_encoder("libx264"):
            vargs = ["-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-pix_fmt", "yuv420p"]
            self.backend = "ffmpeg libx264"
        elif vcodec == "h264":
            vargs = ["-c:v", "mpeg4", "-q:v", "3", "-pix_fmt", "yuv420p"]
            self.backend = "ffmpeg mpeg4"
        else:
            vargs = ["-c:v", "mjpeg", "-q:v", "3", "-pix_fmt", "yuvj420p"]
            self.backend = "ffmpeg mjpeg"
        if width % 2 or height % 2:  # 4:2:0 needs even sides
            vargs = ["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", *vargs]
        self.tmp = _partial_path(path)
        cmd = [ffmpeg_path() or "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-framerate", str(rate), "-i", "-"]
        if audio_from is not None:
            acopy = audio_ok is None or (audio_codec in audio_ok)
            aargs = ["-c:a", "copy"] if acopy else (["-c:a", "aac", "-b:a", "192k"] if container != "avi"
                                                   else ["-c:a", "pcm_s16le"])
            cmd += ["-i", str(audio_from), "-map", "0:v:0", "-map", "1:a:0?", *aargs]
        else:
            cmd += ["-an"]
        cmd += [*vargs, "-f", container, str(self.tmp)]
        self._log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._log)

    def _error_text(self) -> str:
        self._log.seek(0)
        lines = self._log.read().decode(errors="replace").strip().splitlines()
        return lines[-1][:300] if lines else f"ffmpeg exited with code {self.proc.returncode}"

    def write(self, frame: np.ndarray) -> None:
        frame = self._check(frame)
        try:
            self.proc.stdin.write(memoryview(frame).cast("B"))
        except (BrokenPipeError, ValueError, OSError):
            self.proc.wait()
            raise OSError(f"writing {self.path.name} failed: {self._error_text()}") from None
        self.frames += 1

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        rc = self.proc.wait()
        if rc != 0:
            msg = self._error_text()
            self._remove_tmp()
            raise OSError(f"writing {self.path.name} failed: {msg}")
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._remove_tmp()


class CvWriter(VideoWriter):
    """OpenCV's writer (no ffmpeg here): mp4v, or MJPG for .avi. Video only."""

    def __init__(self, path: Path, width: int, height: int, fps: float) -> None:
        super().__init__(path, width, height)
        # OpenCV picks the container from the extension, so the partial name keeps it
        self.tmp = _partial_path(path, suffix=f".partial{path.suffix}")
        fourcc = "MJPG" if path.suffix.lower() == ".avi" else "mp4v"
        self.backend = f"opencv {fourcc}"
        self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*fourcc), float(fps), (width, height))
        if not self.writer.isOpened():
            self._remove_tmp()
            raise UserError(f"{path}: OpenCV cannot write {fourcc} video here (install ffmpeg)")

    def write(self, frame: np.ndarray) -> None:
        self.writer.write(cv2.cvtColor(self._check(frame), cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        self.writer.release()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.writer.release()
        self._remove_tmp()


def check_output_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    if p.suffix.lower() not in CONTAINERS:
        raise UserError(f"{p}: unsupported video file type {p.suffix or '(none)'!r} (use {supported_extensions()})")
    if p.is_dir():
        raise UserError(f"{p}: is a folder, expected a video file name")
    if not p.parent.exists():
        raise UserError(f"{p.parent}: no such folder for the output")
    if not os.access(p.parent, os.W_OK):
        raise UserError(f"{p.parent}: folder is not writable")
    return p


def open_video_writer(path: str | os.PathLike, width: int, height: int, fps: float, rate: str | None = None,
                      audio_from: Path | None = None, audio_codec: str | None = None) -> VideoWriter:
    """The best writer available for `path` (ffmpeg H.264 when ffmpeg exists, else OpenCV)."""
    p = check_output_path(path)
    if ffmpeg_path():
        return FfmpegWriter(p, width, height, rate or f"{fps:.6g}", audio_from=audio_from, audio_codec=audio_codec)
    return CvWriter(p, width, height, fps)


# ---------------------------------------------------------------------------------------------- sinks
class Sink(ABC):
    """Where frames go (several at once). Frames are uint8 RGB at the output size."""

    name = "sink"
    #: set by a sink whose user asked to stop (closed the preview window, pressed q or Esc)
    wants_stop = False

    def open(self, width: int, height: int, fps: float) -> None:  # noqa: B027
        """Acquire the device or file. Raises UserError with one line when that is impossible."""

    @abstractmethod
    def write(self, frame: np.ndarray) -> None:
        """Show, send or record one frame."""

    def close(self) -> None:  # noqa: B027
        """Release the device, finish the file. Safe to call twice."""


class NullSink(Sink):
    """Discards frames (benchmarks); keeps the count and the last frame."""

    name = "null"

    def __init__(self) -> None:
        self.frames = 0
        self.last: np.ndarray | None = None

    def write(self, frame: np.ndarray) -> None:
        self.frames += 1
        self.last = frame


class RecorderSink(Sink):
    def __init__(self, path: str | os.PathLike, log: Callable[[str], None] = print) -> None:
        self.path = check_output_path(path)
        self.name = f"file {self.path}"
        self.log = log
        self.writer: VideoWriter | None = None

    def open(self, width: int, height: int, fps: float) -> None:
        if self.writer is not None and (self.writer.width, self.writer.height) == (width, height):
            return
        self.close()
        self.writer = open_video_writer(self.path, width, height, fps)

    def write(self, frame: np.ndarray) -> None:
        self.writer.write(frame)

    @property
    def frames(self) -> int:
        return self.writer.frames if self.writer else 0

    def close(self) -> None:
        writer, self.writer = self.writer, None
        if writer is None:
            return
        if writer.frames == 0:
            writer.abort()
            self.log(f"{self.path}: no frames were recorded, no file written")
            return
        writer.close()
        self.log(f"recorded {writer.frames} frames to {self.path}")


def vcam_help(platform: str | None = None) -> str:
    """What to do when no virtual camera device exists, for this OS."""
    platform = platform or sys.platform
    if platform.startswith("linux"):
        return ("load the v4l2loopback module once: sudo modprobe v4l2loopback devices=1 exclusive_caps=1 "
                "card_label=autoencoded (package v4l2loopback-dkms)")
    if platform == "darwin":
        return ("install OBS Studio 30+ and click Start Virtual Camera once (approve the system extension), "
                "then stop it and try again")
    if platform.startswith("win"):
        return "install OBS Studio 30+ and click Start Virtual Camera once, then stop it and try again"
    return "this OS has no supported virtual camera (use --output window or --output FILE)"


class VirtualCamSink(Sink):
    """A virtual camera through pyvirtualcam (v4l2loopback on Linux, OBS Virtual Camera on Windows/macOS)."""

    def __init__(self, device: str | None = None, log: Callable[[str], None] = print) -> None:
        self.device = device
        self.log = log
        self.cam = None
        self.name = "vcam"

    def open(self, width: int, height: int, fps: float) -> None:
        if self.cam is not None and (self.cam.width, self.cam.height) == (width, height):
            return  # already opened (the live command probes the device before the loop starts)
        self.close()
        try:
            import pyvirtualcam
        except ImportError:
            raise UserError("the virtual camera needs pyvirtualcam: pip install 'autoencoded[vcam]' "
                            "(or use --output window / --output FILE)") from None
        try:
            self.cam = pyvirtualcam.Camera(width, height, fps, fmt=pyvirtualcam.PixelFormat.RGB,
                                           device=self.device)
        except (RuntimeError, OSError, ValueError) as exc:
            text = str(exc).strip()
            reason = text.splitlines()[0].split(". ")[0].rstrip(".")[:140] if text else type(exc).__name__
            raise UserError(f"no virtual camera ({reason}): {vcam_help()}") from None
        self.name = f"vcam {self.cam.device}"
        self.log(f"virtual camera: {self.cam.device} ({width}x{height} @ {fps:g} fps)")

    def write(self, frame: np.ndarray) -> None:
        self.cam.send(np.ascontiguousarray(frame))

    def close(self) -> None:
        cam, self.cam = self.cam, None
        if cam is not None:
            cam.close()


class WindowSink(Sink):
    """A preview window (OpenCV). q or Esc, or closing the window, stops the loop."""

    def __init__(self, title: str = "autoencoded") -> None:
        self.title = title
        self.name = "window"
        self._shown = False

    def open(self, width: int, height: int, fps: float) -> None:
        if not has_display():
            raise UserError("no display for a preview window ($DISPLAY and $WAYLAND_DISPLAY are unset); "
                            "use --output FILE or --output vcam")
        self.size = (width, height)

    def write(self, frame: np.ndarray) -> None:
        # the window is created by the thread that draws it (GUI toolkits want one thread)
        if not self._shown:
            cv2.namedWindow(self.title, cv2.WINDOW_NORMAL)
            cv2.resizeWindow(self.title, min(self.size[0], 1280), min(self.size[1], 720))
            self._shown = True
        cv2.imshow(self.title, cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        key = cv2.waitKey(1) & 0xFF
        if key in (27, ord("q")) or cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
            self.wants_stop = True

    def close(self) -> None:
        if self._shown:
            self._shown = False
            try:
                cv2.destroyWindow(self.title)
                cv2.waitKey(1)
            except cv2.error:
                pass


def open_sink(spec: str, log: Callable[[str], None] = print) -> Sink:
    """An --output value -> a Sink (not yet opened)."""
    if spec == "vcam":
        return VirtualCamSink(log=log)
    if spec.startswith("vcam:"):
        return VirtualCamSink(device=spec.split(":", 1)[1] or None, log=log)
    if spec == "window":
        return WindowSink()
    if spec == "null":
        return NullSink()
    if Path(spec).suffix:
        return RecorderSink(spec, log=log)
    raise UserError(f"--output {spec}: expected vcam, window, null or a video file ({supported_extensions()})")
