"""What a video file holds: picture size, frame rate (exact, for ffmpeg), declared length, pixel aspect, audio.

ffprobe when it is on PATH (it reads what the container declares), else OpenCV (which can only guess
some of it: see `VideoInfo.estimated`).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2

from autoencoded.errors import UserError
from autoencoded.media.tools import error_line, ffprobe_path, file_arg, have_ffmpeg

MAX_RATE = 240.0  # frames/s; a container stating more (or less than 1) states nothing usable


@dataclass
class VideoInfo:
    path: Path
    width: int
    height: int
    fps: float
    expected_frames: int | None  # what the container declares (may lie on damaged files)
    duration_s: float | None
    sar: float = 1.0  # pixel aspect ratio (anamorphic DVDs are not square)
    estimated: bool = False  # expected_frames is duration x fps, not a count the container declares
    rate: str | None = None  # the exact frame rate for ffmpeg, e.g. "24000/1001"; None if none is usable
    audio_codec: str | None = None  # the first audio stream's codec, None without sound (or unknown)
    audio_known: bool = True  # False where the probe cannot see audio streams (OpenCV)


def probe(path: str | os.PathLike, decoder: str = "auto") -> VideoInfo:
    """The first video stream (and the first audio stream) of `path`. UserError if missing or not a video.

    decoder: "ffmpeg" asks ffprobe, "opencv" asks OpenCV, "auto" ffprobe when it is installed.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if not path.is_file():
        raise UserError(f"{path}: not a file")
    use_ffprobe = have_ffmpeg() if decoder == "auto" else decoder == "ffmpeg"
    info = _probe_ffprobe(path) if use_ffprobe else _probe_opencv(path)
    if info.width <= 0 or info.height <= 0:
        raise UserError(f"{path}: not a readable video (no picture size)")
    return info


def check_decodes(path: str | os.PathLike) -> None:
    """UserError unless OpenCV decodes a first frame (for the commands that read frames with OpenCV)."""
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise UserError(f"{path}: cannot open as a video")
        ok, _ = cap.read()
        if not ok:
            raise UserError(f"{path}: cannot decode any frame (not a video, or damaged)")
    finally:
        cap.release()


# what demuxers say when a file stops inside what it declared (Matroska, MP4/MOV)
ENDED_EARLY = ("File ended prematurely", "partial file", "Truncating packet", "truncated")


def ended_early(path: str | os.PathLike) -> str | None:
    """The demuxer's own line when `path` ends before what its container declares (a copy cut short, a
    recording that stopped), else None; None too without ffprobe. Reads the packets without decoding them:
    for a file whose length is only a duration (Matroska), where a short read alone cannot tell a cut file
    from an estimate that was off."""
    if not have_ffmpeg():
        return None
    cmd = [ffprobe_path() or "ffprobe", "-v", "error", "-count_packets", "-select_streams", "v:0",
           "-show_entries", "stream=nb_read_packets", "-of", "csv=p=0", file_arg(path)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=600)
    except (OSError, subprocess.SubprocessError):
        return None
    for line in r.stderr.splitlines():
        if any(word in line for word in ENDED_EARLY):
            return line.split("] ", 1)[-1].strip()[:200]
    return None


def _probe_ffprobe(path: Path) -> VideoInfo:
    cmd = [ffprobe_path() or "ffprobe", "-v", "error", "-of", "json", "-show_entries",
           "stream=codec_type,codec_name,width,height,avg_frame_rate,r_frame_rate,nb_frames,duration,"
           "sample_aspect_ratio:stream_side_data=rotation:stream_tags=rotate,DURATION:format=duration", file_arg(path)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise UserError(f"{path}: not a readable video (ffprobe: {exc})") from None
    doc: dict = {}
    if r.returncode == 0:
        try:
            doc = json.loads(r.stdout) or {}
        except json.JSONDecodeError:
            doc = {}
    streams = doc.get("streams") or []
    videos = [s for s in streams if s.get("codec_type") == "video"]
    audios = [s for s in streams if s.get("codec_type") == "audio"]
    if not videos:
        why = error_line(r.stderr) or "no video stream"
        raise UserError(f"{path}: not a readable video ({why})")
    s = videos[0]
    avg, real = _rate(s.get("avg_frame_rate")), _rate(s.get("r_frame_rate"))
    fps = float(avg or real or 0.0)
    # the video's own length first: Matroska states it only as a tag, and the file's may include longer sound
    duration = _num(s.get("duration")) or _clock((s.get("tags") or {}).get("DURATION")) \
        or _num((doc.get("format") or {}).get("duration"))
    expected = _int(s.get("nb_frames"))
    estimated = expected is None and bool(duration and fps)
    if estimated:
        expected = round(duration * fps)
    sar = _rate(str(s.get("sample_aspect_ratio", "1:1")).replace(":", "/")) or 1
    usable = [r for r in (avg, real) if r and 1 <= r <= MAX_RATE]
    rate = f"{usable[0].numerator}/{usable[0].denominator}" if usable else None
    audio = (audios[0].get("codec_name") or "unknown") if audios else None
    width, height = int(s.get("width") or 0), int(s.get("height") or 0)
    if _rotation(s) % 180 == 90:  # a phone held upright: decoders turn the picture, so describe it turned
        width, height, sar = height, width, 1 / sar
    return VideoInfo(path, width, height, fps, expected, duration, float(sar), estimated, rate, audio)


def _rotation(stream: dict) -> int:
    """Degrees the picture is turned for display: the display matrix (side data), else the old rotate tag."""
    for side in stream.get("side_data_list") or []:
        if isinstance(side, dict) and "rotation" in side:
            try:
                return round(float(side["rotation"]))
            except (TypeError, ValueError):
                return 0
    try:
        return round(float((stream.get("tags") or {}).get("rotate", 0)))
    except (TypeError, ValueError):
        return 0


def _probe_opencv(path: Path) -> VideoInfo:
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise UserError(f"{path}: not a readable video (OpenCV cannot open it)")
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        num, den = cap.get(cv2.CAP_PROP_SAR_NUM), cap.get(cv2.CAP_PROP_SAR_DEN)
    finally:
        cap.release()
    sar = num / den if num > 0 and den > 0 else 1.0
    expected = count if count > 0 else None
    duration = expected / fps if expected and fps > 0 else None
    rate = str(Fraction(fps).limit_denominator(1001)) if 1.0 <= fps <= MAX_RATE else None
    # OpenCV does not say whether the count is declared or duration x fps, so allow for the latter;
    # nor does it see audio streams
    return VideoInfo(path, w, h, fps, expected, duration, sar, estimated=True, rate=rate, audio_known=False)


def _rate(text) -> Fraction | None:
    try:
        value = Fraction(str(text))
    except (ValueError, ZeroDivisionError, TypeError):
        return None
    return value if value > 0 else None


def _num(text) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if 0 < value < math.inf else None


def _clock(text) -> float | None:
    """'00:00:10.000000000' (Matroska's DURATION tag) -> 10.0."""
    try:
        h, m, sec = str(text).split(":")
        return _num(int(h) * 3600 + int(m) * 60 + float(sec))
    except (TypeError, ValueError):
        return None


def _int(text) -> int | None:
    try:
        value = int(text)
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None


def picture_sizes(path: str | os.PathLike) -> list[tuple[int, int]]:
    """The sizes (stored, before any rotation) of the first video stream's pictures, each once, in the order
    they first appear; [] without ffprobe or when it cannot tell. Only keyframes are decoded (a fraction of
    a second for a feature film): H.264, HEVC and the MPEG codecs change size only at one. (VP9 may change
    it at any frame; such a change shows only at the next keyframe here.)"""
    if not have_ffmpeg():
        return []
    cmd = [ffprobe_path() or "ffprobe", "-v", "error", "-skip_frame", "nokey", "-select_streams", "v:0",
           "-show_entries", "frame=width,height", "-of", "csv=p=0", file_arg(path)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=600)
    except (OSError, subprocess.SubprocessError):
        return []
    sizes: list[tuple[int, int]] = []
    for line in r.stdout.splitlines():
        parts = line.strip().strip(",").split(",")
        if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit():
            size = (int(parts[0]), int(parts[1]))
            if size not in sizes:
                sizes.append(size)
    return sizes
