"""ffmpeg and ffprobe: where they are, which encoders this build has, and the line that says what went wrong."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess


def ffmpeg_path() -> str | None:
    """The ffmpeg on PATH, looked up each time (cheap), so a PATH without it means no ffmpeg."""
    return shutil.which("ffmpeg")


def ffprobe_path() -> str | None:
    return shutil.which("ffprobe")


def file_arg(path: str | os.PathLike) -> str:
    """A path as ffmpeg and ffprobe must be given it: `file:` + path. A bare name beginning with '-' is an
    option to ffprobe ("-clip.mp4" fails with "Missing argument for option 'clip.mp4'"), '-' alone is
    stdin to both, and a name with a colon may name a protocol ("http:x.mp4"); the file protocol reads
    any of them as the file they are."""
    return "file:" + os.fspath(path)


def have_ffmpeg() -> bool:
    """Both halves present: ffprobe to read a file's streams, ffmpeg to decode or encode it."""
    return ffmpeg_path() is not None and ffprobe_path() is not None


def has_encoder(name: str) -> bool:
    exe = ffmpeg_path()
    return bool(exe) and _encoders(exe).count(name) > 0


@functools.lru_cache(maxsize=4)
def _encoders(exe: str) -> tuple[str, ...]:
    try:
        out = subprocess.run([exe, "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(line.split()[1] for line in out.splitlines() if line.startswith(" ") and len(line.split()) > 1)


def error_line(text: str) -> str:
    """The most telling line of ffmpeg's stderr: the last one from a decoder/demuxer, else the last."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    if not lines:
        return ""
    tagged = [ln for ln in lines if ln.startswith("[") and " @ " in ln.split("]", 1)[0]]
    line = tagged[-1] if tagged else lines[-1]
    # "[mjpeg @ 0x55...] overread 8" -> "mjpeg: overread 8"; "/path/f.avi: Invalid data" -> "Invalid data"
    if line.startswith("[") and "] " in line:
        tag, rest = line[1:].split("] ", 1)
        line = f"{tag.split(' @ ')[0]}: {rest}"
    elif ": " in line and os.sep in line.split(": ", 1)[0]:
        line = line.split(": ", 1)[1]
    return line
