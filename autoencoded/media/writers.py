"""Writing video files that never look finished before they are, and never lose what was written.

Frames go to a hidden `.NAME.*.partial` file beside the target, renamed only when complete, so an
interrupted recording or render never leaves a file that looks finished. A write that fails part-way (a
full disk, an encoder that died) keeps what was written under a name that says so, NAME.partial.EXT
(`VideoWriter.salvage`), and the error says where. The finished file never replaces one that appeared
under its name meanwhile (unless `overwrite`); the name itself is claimed by the caller
(`autoencoded.fileio.Claim`). H.264 goes through an ffmpeg subprocess (OpenCV's wheel cannot write it);
without ffmpeg, OpenCV writes mp4v (MJPG for .avi).
"""

from __future__ import annotations

import errno
import os
import subprocess
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path

import cv2
import numpy as np

from autoencoded import signals
from autoencoded.errors import UserError
from autoencoded.fileio import check_file_name, free_name, temp_beside
from autoencoded.media.tools import ffmpeg_path, file_arg, has_encoder

# extension -> (ffmpeg container, ffmpeg video codec args, audio codecs it can take as they are)
CONTAINERS: dict[str, tuple[str, str, set[str] | None]] = {
    ".mp4": ("mp4", "h264", {"aac", "mp3", "alac", "ac3", "eac3", "opus"}),  # flac in mp4: "experimental" (ffmpeg 5)
    ".m4v": ("mp4", "h264", {"aac", "mp3", "alac", "ac3", "eac3"}),
    ".mov": ("mov", "h264", {"aac", "mp3", "alac", "ac3", "eac3", "pcm_s16le", "pcm_s24le"}),
    ".mkv": ("matroska", "h264", None),  # None: takes anything
    ".avi": ("avi", "mjpeg", {"mp3", "ac3", "pcm_s16le"}),
}


def supported_extensions() -> str:
    return ", ".join(CONTAINERS)


def _partial_path(final: Path, suffix: str = ".partial") -> Path:
    """A new hidden temp file beside `final`, with the permissions a normally created file would get."""
    fd, tmp = temp_beside(final, suffix)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return tmp


def partial_name(out: Path) -> Path:
    """film.mp4 -> film.partial.mp4 (film.partial-2.mp4 ... when taken): playable, and says what it is."""
    return free_name(out, ".partial")


def publish(tmp: Path, final: Path, overwrite: bool) -> Path:
    """Rename the finished `tmp` to `final` and return the name it got. Without `overwrite` a file that
    appeared at `final` meanwhile is never replaced: a hard link fails where the name is taken (a rename
    would not), and the file then takes the next free name (NAME-2.EXT)."""
    if overwrite:
        os.replace(tmp, final)
        return final
    target = final
    while True:
        try:
            os.link(tmp, target)
        except FileExistsError:
            target = free_name(final)
            continue
        except OSError as exc:  # a file system without hard links (FAT, some FUSE): check, then rename
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
                raise
            if os.path.lexists(target):
                target = free_name(final)
            os.replace(tmp, target)
            return target
        os.unlink(tmp)
        return target


class WriteFailed(OSError):
    """A video write that failed part-way (a full disk, the encoder gone); the message says why and where the
    part written was kept."""


class VideoWriter(ABC):
    """Writes frames to a partial file; `close()` finishes it and renames it to `path`, `abort()` deletes it.
    A write or close that fails keeps what was written (`salvage`) and says where in its OSError."""

    backend = "none"
    tmp: Path

    def __init__(self, path: Path, width: int, height: int, overwrite: bool = False) -> None:
        self.path, self.width, self.height, self.overwrite = path, width, height, overwrite
        self.frames = 0
        self.kept: Path | None = None  # where salvage() put the part written

    @abstractmethod
    def write(self, frame: np.ndarray) -> None:
        """Append one uint8 RGB frame at the writer's size."""

    @abstractmethod
    def close(self, to: Path | None = None) -> Path:
        """Finish the file and rename it to `path` (or `to`, e.g. a name that says it is partial); returns
        the name it got (another when a file appeared at that name meanwhile, see `publish`)."""

    @abstractmethod
    def abort(self) -> None:
        """Stop and delete the partial file."""

    def _remove_tmp(self) -> None:
        try:
            self.tmp.unlink()
        except FileNotFoundError:
            pass

    def salvage(self) -> str:
        """After a failed write: the part written moves to NAME.partial.EXT (an empty one is removed). Returns
        what became of it, for the error line. Moving it needs no free space (a rename in one folder)."""
        if self.kept is not None:
            return f"the part written is kept in {self.kept}"
        try:
            size = self.tmp.stat().st_size
        except FileNotFoundError:
            return "nothing was written"
        if size == 0:
            self._remove_tmp()
            return "nothing was written"
        try:
            self.kept = publish(self.tmp, partial_name(self.path), overwrite=False)
        except OSError:
            self.kept = self.tmp  # it stays where it is, under its hidden name
        amount = f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB"
        return f"the part written ({amount}) is kept in {self.kept}"

    def _failed(self, why: str) -> WriteFailed:
        return WriteFailed(f"writing {self.path.name} failed: {why}; {self.salvage()}")

    def _check(self, frame: np.ndarray) -> np.ndarray:
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(f"frame {frame.shape} {frame.dtype} does not match the video "
                             f"({self.width}x{self.height} uint8 RGB)")
        return np.ascontiguousarray(frame)


# Frames go down the pipe as 4:2:0 (BT.601 video range, what ffmpeg itself makes of RGB) where the codec takes
# that: OpenCV converts faster than ffmpeg's swscale (rgb24 has no fast path in it), and the pipe carries half
# the bytes (the CPU a 1080p frame costs each way: docs/speed.md).
PIPE_I420 = True


# ffmpeg's lines for an output it could not finish, whatever its exit status says
FATAL_LOG = ("Error writing trailer", "Error closing file", "No space left on device", "Input/output error")


class FfmpegWriter(VideoWriter):
    """rawvideo on stdin -> H.264 (or MJPEG for .avi) via an ffmpeg subprocess; optional audio from a file."""

    def __init__(self, path: Path, width: int, height: int, rate: str | float,
                 audio_from: Path | None = None, audio_codec: str | None = None, crf: int = 18,
                 preset: str = "veryfast", overwrite: bool = False, fragmented: bool = False) -> None:
        super().__init__(path, width, height, overwrite)
        container, vcodec, audio_ok = CONTAINERS[path.suffix.lower()]
        # MP4 and MOV keep their index at the end: cut short (a full disk, a kill -9) they do not play at
        # all. Fragmented, every second of the file stands on its own, as every cluster of a .mkv does
        fragments = ["-movflags", "+frag_keyframe+empty_moov+default_base_moof", "-frag_duration", "1000000"] \
            if fragmented and container in ("mp4", "mov") else []
        if vcodec == "h264" and has_encoder("libx264"):
            vargs = ["-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p"]
            self.backend = "ffmpeg libx264"
        elif vcodec == "h264":
            vargs = ["-c:v", "mpeg4", "-q:v", "3", "-pix_fmt", "yuv420p"]
            self.backend = "ffmpeg mpeg4"
        else:
            vargs = ["-c:v", "mjpeg", "-q:v", "3", "-pix_fmt", "yuvj420p"]
            self.backend = "ffmpeg mjpeg"
        if width % 2 or height % 2:  # 4:2:0 needs even sides
            vargs = ["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", *vargs]
        # 4:2:0 needs even sides; MJPEG wants full range: those frames go in as RGB, the others as I420
        self.i420 = PIPE_I420 and vcodec != "mjpeg" and not (width % 2 or height % 2)
        self.tmp = _partial_path(path)
        cmd = [ffmpeg_path() or "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "yuv420p" if self.i420 else "rgb24", "-s", f"{width}x{height}",
               "-framerate", str(rate), "-i", "-"]
        if audio_from is not None:
            acopy = audio_ok is None or (audio_codec in audio_ok)
            aargs = ["-c:a", "copy"] if acopy else (["-c:a", "aac", "-b:a", "192k"] if container != "avi"
                                                   else ["-c:a", "pcm_s16le"])
            cmd += ["-i", file_arg(audio_from), "-map", "0:v:0", "-map", "1:a:0?", *aargs]
        else:
            cmd += ["-an"]
        cmd += [*vargs, *fragments, "-f", container, file_arg(self.tmp)]
        self._log = tempfile.TemporaryFile()
        # in a session of its own: a terminal's Ctrl-C must not kill the encoder before close() finishes the file
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._log,
                                     **signals.CHILD)

    def _error_text(self) -> str:
        self._log.seek(0)
        lines = self._log.read().decode(errors="replace").strip().splitlines()
        if not lines:
            return f"ffmpeg exited with code {self.proc.returncode}"
        # ffmpeg names the hidden partial, which salvage() is about to move: name the output instead
        return lines[-1].replace(f"file:{self.tmp}", self.path.name).replace(str(self.tmp), self.path.name)[:300]

    def _fatal_error(self) -> bool:
        """ffmpeg 5.1 exits 0 when the disk fills while it writes the trailer ("Error writing trailer ...:
        No space left on device"): the file is cut short all the same, so its log is read too."""
        self._log.seek(0)
        text = self._log.read().decode(errors="replace")
        return any(m in text for m in FATAL_LOG)

    def write(self, frame: np.ndarray) -> None:
        frame = self._check(frame)
        if self.i420:
            frame = cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420)
        try:
            self.proc.stdin.write(memoryview(frame).cast("B"))
        except (BrokenPipeError, ValueError, OSError):
            self.proc.wait()
            raise self._failed(self._error_text()) from None
        self.frames += 1

    def close(self, to: Path | None = None) -> Path:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        rc = self.proc.wait()
        if rc != 0 or self._fatal_error():
            raise self._failed(self._error_text())
        return publish(self.tmp, to or self.path, self.overwrite and to is None)

    def abort(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.kept is None:
            self._remove_tmp()


class CvWriter(VideoWriter):
    """OpenCV's writer (no ffmpeg here): mp4v, or MJPG for .avi. Video only."""

    def __init__(self, path: Path, width: int, height: int, fps: float, overwrite: bool = False) -> None:
        super().__init__(path, width, height, overwrite)
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

    def close(self, to: Path | None = None) -> Path:
        self.writer.release()
        return publish(self.tmp, to or self.path, self.overwrite and to is None)

    def abort(self) -> None:
        self.writer.release()
        if self.kept is None:
            self._remove_tmp()


def check_output_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    if p.suffix.lower() not in CONTAINERS:
        raise UserError(f"{p}: unsupported video file type {p.suffix or '(none)'!r} (use {supported_extensions()})")
    return check_file_name(p)


# x264 preset of live recordings: a live show shares 2 cores with the model, so it records fast and big
# (CRF 18 either way) and render takes its time (veryfast); the cores each preset costs: docs/speed.md
LIVE_PRESET = "ultrafast"


def open_video_writer(path: str | os.PathLike, width: int, height: int, fps: float, rate: str | None = None,
                      audio_from: Path | None = None, audio_codec: str | None = None,
                      preset: str = "veryfast", overwrite: bool = False, fragmented: bool = False) -> VideoWriter:
    """The best writer available for `path` (ffmpeg H.264 when ffmpeg exists, else OpenCV). `preset` is
    x264's (LIVE_PRESET for a live recording). overwrite: the finished file may replace one at `path`.
    fragmented: an .mp4/.mov that plays up to where it was cut (a live show, which cannot be made again)."""
    p = check_output_path(path)
    if ffmpeg_path():
        return FfmpegWriter(p, width, height, rate or f"{fps:.6g}", audio_from=audio_from, audio_codec=audio_codec,
                            preset=preset, overwrite=overwrite, fragmented=fragmented)
    return CvWriter(p, width, height, fps, overwrite=overwrite)
