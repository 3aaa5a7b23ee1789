"""A film's own soundtrack, decoded with ffmpeg to mono float32 samples, with its offset from the video.

Video frame i of a film plays at `i / fps` seconds after its first video frame; the audio stream may start
earlier or later than the video (containers state both start times). `offset_s` is the audio's start
minus the video's, so that a frame at video time t hears the audio at stream time t - offset_s.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autoencoded.errors import UserError
from autoencoded.media.tools import error_line, ffmpeg_path, ffprobe_path, file_arg

RATE = 44100


@dataclass(frozen=True)
class Soundtrack:
    samples: np.ndarray  # mono float32, -1..1
    rate: int
    offset_s: float  # audio start minus video start, in seconds

    @property
    def seconds(self) -> float:
        return self.samples.size / self.rate


def _start_times(path: Path) -> tuple[float, float]:
    """(video start, audio start) in seconds as the container states them (0 when it does not)."""
    exe = ffprobe_path()
    if not exe:
        return 0.0, 0.0
    try:
        out = subprocess.run([exe, "-v", "error", "-show_entries", "stream=codec_type,start_time", "-of", "json",
                              file_arg(path)], capture_output=True, text=True, errors="replace", timeout=60)
        streams = json.loads(out.stdout or "{}").get("streams", [])
    except (OSError, subprocess.SubprocessError, ValueError):
        return 0.0, 0.0
    starts: dict[str, float] = {}
    for s in streams:
        kind = s.get("codec_type")
        if kind in ("video", "audio") and kind not in starts:
            try:
                starts[kind] = float(s.get("start_time", 0.0))
            except (TypeError, ValueError):
                starts[kind] = 0.0
    return starts.get("video", 0.0), starts.get("audio", 0.0)


def read_soundtrack(path: str | os.PathLike, rate: int = RATE) -> Soundtrack:
    """Decode the first audio stream of `path`. UserError when there is none or ffmpeg is missing."""
    path = Path(path)
    exe = ffmpeg_path()
    if not exe:
        raise UserError("audio signals in render come from the film's soundtrack, decoded by ffmpeg; "
                        "install ffmpeg")
    try:
        done = subprocess.run([exe, "-nostdin", "-v", "error", "-i", file_arg(path), "-map", "0:a:0", "-vn", "-ac", "1",
                               "-ar", str(rate), "-f", "f32le", "-"], capture_output=True, timeout=3600)
    except (OSError, subprocess.SubprocessError) as exc:
        raise UserError(f"{path}: cannot decode its soundtrack ({exc})") from None
    samples = np.frombuffer(done.stdout, dtype="<f4").astype(np.float32)
    if samples.size == 0:
        why = done.stderr.decode("utf-8", "replace")
        if done.returncode == 0 or "matches no streams" in why:
            raise UserError(f"{path} has no soundtrack; audio signals in render come from it")
        raise UserError(f"{path}: cannot decode its soundtrack ({error_line(why) or 'ffmpeg failed'})")
    video_start, audio_start = _start_times(path)
    return Soundtrack(samples, rate, audio_start - video_start)
