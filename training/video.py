"""Reading films for `autoencoded prepare`: sample, find letterbox bars, decode at the model size (the probe
is `autoencoded.media.probe`).

Two decoders, one behaviour. The ffmpeg one (used when `ffmpeg`/`ffprobe` are on PATH) crops and scales
in YUV inside ffmpeg and pipes small RGB frames: ~1.5x faster than OpenCV on 1080p H.264 here, where the
BGR conversion of every full-size frame dominates. The OpenCV one needs nothing but the wheel.
`AUTOENCODED_DECODER=opencv|ffmpeg` forces one.

A source that delivers fewer frames than its container declares (truncated or damaged mid-stream)
ends with `Decoded.stopped_at` = frames delivered and `Decoded.error` = the decoder's last complaint.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np

from autoencoded import signals
from autoencoded.errors import UserError
from autoencoded.media.probe import VideoInfo
from autoencoded.media.tools import error_line, file_arg, have_ffmpeg

CROP_MODES = ("auto", "center", "fit", "none")
BAR_LEVEL = 24  # a row/column whose brightest sampled mean stays at or below this is a black bar


@dataclass
class Decoded:
    """Filled in while `frames()` runs: how many frames came out, and why it ended early, if it did."""

    frames: int = 0
    stopped_at: int | None = None
    error: str | None = None
    messages: list[str] = field(default_factory=list)


def decoder_name() -> str:
    # OpenCV's bundled FFmpeg prints decoder complaints straight to stderr; errors are reported here instead
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    forced = os.environ.get("AUTOENCODED_DECODER", "").strip().lower()
    if forced in ("opencv", "ffmpeg"):
        if forced == "ffmpeg" and not have_ffmpeg():
            raise UserError("AUTOENCODED_DECODER=ffmpeg, but ffmpeg/ffprobe are not on PATH")
        return forced
    if forced:
        raise UserError(f"AUTOENCODED_DECODER={forced!r}: use 'opencv' or 'ffmpeg'")
    return "ffmpeg" if have_ffmpeg() else "opencv"


# ---------------------------------------------------------------- crop geometry

def sample_frames(info: VideoInfo, decoder: str, count: int = 12) -> list[np.ndarray]:
    """Up to `count` RGB frames spread over 10%..90% of the film, at most SAMPLE_WIDTH wide.

    ffmpeg: one process taking the keyframe at or before each point and decoding nothing else (~0.7 s
    for 12 samples of a 720p H.264 file here; accurate seeks took ~3 s, and 8 s on a 1080p clip whose only
    keyframe is its first).
    """
    count = min(count, max(6, int((info.duration_s or 0) / 5)))  # one per 5 s, 6 to `count`
    sw, sh = sample_size(info)
    points = [0.1 + 0.8 * k / max(count - 1, 1) for k in range(count)] if count > 1 else [0.5]
    if decoder == "opencv" or not info.duration_s:
        return _sample_opencv(info, points, (sw, sh))
    cmd, graph = ["ffmpeg", "-v", "quiet", "-nostdin"], []
    for k, p in enumerate(points):
        cmd += ["-skip_frame", "nokey", "-noaccurate_seek", "-ss", f"{info.duration_s * p:.3f}",
                "-i", file_arg(info.path)]
        graph.append(f"[{k}:v:0]trim=end_frame=1,setpts=PTS-STARTPTS,scale={sw}:{sh}:flags=area,setsar=1[v{k}]")
    joined = ";".join(graph) + ";" + "".join(f"[v{k}]" for k in range(count)) + f"concat=n={count}:v=1:a=0[out]"
    cmd += ["-filter_complex", joined, "-map", "[out]", "-vsync", "passthrough", "-f", "rawvideo",
            "-pix_fmt", "rgb24", "pipe:1"]
    data = subprocess.run(cmd, capture_output=True, **signals.CHILD).stdout
    size = sw * sh * 3
    out = [np.frombuffer(data[o:o + size], np.uint8).reshape(sh, sw, 3) for o in range(0, len(data) - size + 1, size)]
    return out or _sample_opencv(info, points, (sw, sh))


SAMPLE_WIDTH = 960


def sample_size(info: VideoInfo) -> tuple[int, int]:
    if info.width <= SAMPLE_WIDTH:
        return info.width, info.height
    return SAMPLE_WIDTH, max(2, int(round(info.height * SAMPLE_WIDTH / info.width / 2)) * 2)


def _sample_opencv(info: VideoInfo, points: list[float], size: tuple[int, int]) -> list[np.ndarray]:
    n = info.expected_frames or 0
    cap = cv2.VideoCapture(str(info.path))
    out = []
    try:
        for i in sorted({int(n * p) for p in points}) if n > 1 else [0]:
            if i:
                cap.set(cv2.CAP_PROP_POS_FRAMES, i)
            ok, frame = cap.read()
            if ok and frame.shape[:2] == (info.height, info.width):
                out.append(cv2.cvtColor(resize(frame, *size), cv2.COLOR_BGR2RGB))
    finally:
        cap.release()
    return out


def detect_bars(samples: list[np.ndarray], full_size: tuple[int, int] | None = None
                ) -> tuple[int, int, int, int] | None:
    """(x, y, w, h) of the picture inside black letterbox/pillarbox bars, or None if there are none.

    A row or column is a bar only if it is dark in every sample (its brightest mean over the samples), so
    a dark scene does not look like a bar. Bars are trimmed from the edges inwards only. Samples may be
    smaller than the source: the box is scaled to `full_size` (W, H), rounding into the picture.
    """
    if not samples:
        return None
    luma = [s.astype(np.float32).mean(axis=2) for s in samples]
    rows = np.max([g.mean(axis=1) for g in luma], axis=0)
    cols = np.max([g.mean(axis=0) for g in luma], axis=0)
    bright_rows, bright_cols = np.nonzero(rows > BAR_LEVEL)[0], np.nonzero(cols > BAR_LEVEL)[0]
    if bright_rows.size == 0 or bright_cols.size == 0:  # all dark: nothing to judge by
        return None
    h, w = luma[0].shape
    fw, fh = full_size or (w, h)
    sx, sy = fw / w, fh / h
    # a partly dark edge row (the scaled-down bar boundary) counts as picture; then scale and stay inside
    y0, y1 = int(np.ceil(bright_rows[0] * sy)), int(np.floor((bright_rows[-1] + 1) * sy))
    x0, x1 = int(np.ceil(bright_cols[0] * sx)), int(np.floor((bright_cols[-1] + 1) * sx))
    # even coordinates and sizes (YUV 4:2:0)
    y0, x0 = y0 + (y0 & 1), x0 + (x0 & 1)
    y1, x1 = y1 - ((y1 - y0) & 1), x1 - ((x1 - x0) & 1)
    if (x0, y0, x1, y1) == (0, 0, fw, fh) or y1 - y0 < fh * 0.3 or x1 - x0 < fw * 0.3:
        return None
    return (x0, y0, x1 - x0, y1 - y0)


def crop_box(info: VideoInfo, mode: str, width: int, height: int,
             bars: tuple[int, int, int, int] | None = None) -> tuple[int, int, int, int]:
    """The region of the source (x, y, w, h, in stored pixels) that becomes the frame.

    auto: inside the detected bars, then the centre at the target aspect; center: the centre at the
    target aspect; fit and none: the whole picture (fit pads it, none stretches it).
    """
    x, y, w, h = (0, 0, info.width, info.height)
    if mode == "auto" and bars is not None:
        x, y, w, h = bars
    if mode in ("auto", "center"):
        target = width / height
        shown = w * info.sar / h  # display aspect of the region
        if shown > target + 1e-3:
            cw = min(w, max(2, int(round(h * target / info.sar / 2)) * 2))
            x += (w - cw) // 2 // 2 * 2
            w = cw
        elif shown < target - 1e-3:
            ch = min(h, max(2, int(round(w * info.sar / target / 2)) * 2))
            y += (h - ch) // 2 // 2 * 2
            h = ch
    return (x, y, w, h)


def fit_size(info: VideoInfo, box: tuple[int, int, int, int], width: int, height: int) -> tuple[int, int]:
    """Inner size for --crop fit: the whole region scaled into width x height at its display aspect."""
    shown = box[2] * info.sar / box[3]
    if shown >= width / height:
        return width, max(2, min(height, int(round(width / shown / 2)) * 2))
    return max(2, min(width, int(round(height * shown / 2)) * 2)), height


# ---------------------------------------------------------------- resizing

def resize(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area-filtered resize; halves first while the shrink is over 4x (same look, ~3x cheaper)."""
    h, w = frame.shape[:2]
    while w >= 4 * width and h >= 4 * height:
        w, h = w // 2, h // 2
        frame = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
    if (w, h) == (width, height):
        return np.ascontiguousarray(frame)
    interp = cv2.INTER_AREA if (w >= width and h >= height) else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(frame), (width, height), interpolation=interp)


def pad_to(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    h, w = frame.shape[:2]
    if (w, h) == (width, height):
        return frame
    out = np.zeros((height, width, 3), np.uint8)
    y0, x0 = (height - h) // 2, (width - w) // 2
    out[y0:y0 + h, x0:x0 + w] = frame
    return out


# ---------------------------------------------------------------- decoding

def frames(info: VideoInfo, decoder: str, box: tuple[int, int, int, int], width: int, height: int,
           mode: str, state: Decoded) -> Iterator[np.ndarray]:
    """Every frame of the source, cropped to `box` and resized to width x height, uint8 RGB.

    The arrays yielded may be reused by the next iteration: copy what you keep.
    """
    inner = fit_size(info, box, width, height) if mode == "fit" else (width, height)
    gen = _frames_ffmpeg if decoder == "ffmpeg" else _frames_opencv
    yield from gen(info, box, inner, (width, height), state)
    expected = info.expected_frames
    if state.stopped_at is None and expected and state.frames < expected - _tolerance(info):
        state.stopped_at = state.frames
        state.error = error_line("\n".join(state.messages)) or f"ended before its declared {expected} frames"
    if state.stopped_at is not None and state.error is None:
        state.error = "decoding failed"


def _tolerance(info: VideoInfo) -> int:
    # a declared count is off by a frame at most on healthy files; duration x fps can be off by more
    return max(2, int((info.expected_frames or 0) * 0.02)) if info.estimated else 1


def _frames_opencv(info, box, inner, size, state: Decoded) -> Iterator[np.ndarray]:
    x, y, w, h = box
    cap = cv2.VideoCapture(str(info.path))
    try:
        while True:
            ok, bgr = cap.read()
            if not ok or bgr is None:
                break
            if bgr.shape[:2] != (info.height, info.width):
                state.stopped_at = state.frames
                state.error = f"picture size changed to {bgr.shape[1]}x{bgr.shape[0]}"
                break
            small = resize(bgr[y:y + h, x:x + w], *inner)
            state.frames += 1
            yield pad_to(cv2.cvtColor(small, cv2.COLOR_BGR2RGB), *size)
    finally:
        cap.release()


def _frames_ffmpeg(info, box, inner, size, state: Decoded) -> Iterator[np.ndarray]:
    x, y, w, h = box
    width, height = size
    vf = f"crop={w}:{h}:{x}:{y}:exact=1,scale={inner[0]}:{inner[1]}:flags=area,setsar=1"
    if inner != size:
        vf += f",pad={width}:{height}:(ow-iw)/2:(oh-ih)/2:black"
    cmd = ["ffmpeg", "-v", "error", "-nostdin", "-i", file_arg(info.path), "-map", "0:v:0", "-an", "-sn",
           "-vf", vf, "-vsync", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
    nbytes = width * height * 3
    with tempfile.TemporaryFile() as err:  # a file, not a pipe: a damaged film can print megabytes
        # its own session: a terminal's Ctrl-C stops us, and we stop the decoder (never read its death as damage)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, **signals.CHILD)
        buf = bytearray(nbytes)
        view = memoryview(buf)
        frame = np.frombuffer(buf, np.uint8).reshape(height, width, 3)
        try:
            while True:
                got = 0
                while got < nbytes:
                    n = proc.stdout.readinto(view[got:])
                    if not n:
                        break
                    got += n
                if got < nbytes:
                    break
                state.frames += 1
                yield frame
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stdout.close()
            rc = proc.wait()
            err.seek(0)
            text = err.read().decode("utf-8", "replace")
        state.messages = [ln for ln in text.splitlines() if ln.strip()][-20:]
        if rc != 0:
            state.stopped_at = state.frames
            state.error = error_line(text) or f"ffmpeg exited with code {rc}"
