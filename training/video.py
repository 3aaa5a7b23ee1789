"""Reading films for `autoencoded prepare`: sample, find letterbox bars, decode at the model size (the probe
is `autoencoded.media.probe`).

Two decoders, one behaviour. The ffmpeg one (used when `ffmpeg`/`ffprobe` are on PATH) crops and scales
in YUV inside ffmpeg and pipes small RGB frames: ~1.5x faster than OpenCV on 1080p H.264 here, where the
BGR conversion of every full-size frame dominates. The OpenCV one needs nothing but the wheel.
`AUTOENCODED_DECODER=opencv|ffmpeg` forces one.

A source that delivers fewer frames than its container declares (truncated or damaged mid-stream)
ends with `Decoded.stopped_at` = frames delivered and `Decoded.error` = the decoder's last complaint.

A film whose picture changes size part-way (a portrait segment after a landscape one, in a transport
stream) cannot go through ffmpeg's fixed crop: its frames are decoded at their own sizes instead
(autoencoded.media.decode) and each size is framed as it comes (framing.Reframer), said in
`Decoded.reframed`.
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
from autoencoded.media.decode import Pictures
from autoencoded.media.framing import Framing, Reframer, fit_size, pad_to, resize
from autoencoded.media.probe import VideoInfo, picture_sizes
from autoencoded.media.tools import error_line, file_arg, have_ffmpeg


@dataclass
class Decoded:
    """Filled in while `frames()` runs: how many frames came out, and why it ended early, if it did."""

    frames: int = 0
    stopped_at: int | None = None
    error: str | None = None
    messages: list[str] = field(default_factory=list)
    last_time_s: float | None = None  # timestamp of the last frame delivered, where the decoder tells it
    reframed: list[str] = field(default_factory=list)  # a line for each picture size after the first


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


# ---------------------------------------------------------------- decoding

def frames(info: VideoInfo, decoder: str, box: tuple[int, int, int, int], width: int, height: int,
           mode: str, state: Decoded) -> Iterator[np.ndarray]:
    """Every frame of the source, cropped to `box` and resized to width x height, uint8 RGB.

    The arrays yielded may be reused by the next iteration: copy what you keep.
    """
    inner = fit_size(box, info.sar, width, height) if mode == "fit" else (width, height)
    if decoder == "ffmpeg" and len(picture_sizes(info.path)) > 1:
        yield from _frames_reframed(info, box, mode, (width, height), state)
    else:
        gen = _frames_ffmpeg if decoder == "ffmpeg" else _frames_opencv
        yield from gen(info, box, inner, (width, height), state)
    if state.stopped_at is None:
        why = _ended_early(info, state)
        if why:
            state.stopped_at = state.frames
            state.error = error_line("\n".join(state.messages)) or why
    if state.stopped_at is not None and state.error is None:
        state.error = "decoding failed"


def _ended_early(info: VideoInfo, state: Decoded) -> str | None:
    """Why the source looks cut short, from evidence only: a frame count the container declares, the
    decoder's own complaints, or the last frame's time against the container's duration. A frame count
    estimated from duration x fps is never evidence: a variable-frame-rate film misses it by far."""
    expected = info.expected_frames
    if not info.estimated:
        return f"ended before its declared {expected} frames" if expected and state.frames < expected - 1 else None
    if state.messages and expected and state.frames < expected:
        return "the decoder reported errors"
    if state.last_time_s is not None and info.duration_s and info.fps > 0:
        end = state.last_time_s + 1 / info.fps
        if end < info.duration_s - max(2 / info.fps, 0.02 * info.duration_s):
            return f"ended at {end:.2f} s of {info.duration_s:.2f} s"
    return None


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
            state.last_time_s = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000
            yield pad_to(cv2.cvtColor(small, cv2.COLOR_BGR2RGB), *size)
    finally:
        cap.release()


def _frames_reframed(info, box, mode: str, size, state: Decoded) -> Iterator[np.ndarray]:
    """Every frame at its own size (ffmpeg, unscaled), the first size cropped to `box` as the fast path
    crops it, any other framed in `mode` as `prepare` frames a film (the centre, whole)."""
    action = {"fit": "fit", "none": "stretch"}.get(mode, "crop")
    first = Framing((info.width, info.height), info.sar, size[0] / size[1], mode, action, box)
    framings = Reframer(first, *size, crop_limit=1.0)
    source = Pictures(info.path, "ffmpeg")
    pictures = iter(source)
    try:
        for pic in pictures:
            h, w = pic.rgb.shape[:2]
            framing, new = framings(w, h, pic.sar)
            if new:
                at = f" ({pic.time_s:.2f} s)" if pic.time_s is not None else ""
                state.reframed.append(f"from frame {state.frames}{at} {framing.describe()}")
            state.frames += 1
            state.last_time_s = pic.time_s
            yield framing.apply(pic.rgb, *size)
    finally:
        pictures.close()  # stops the decoder when the caller stops early
    if source.error:
        state.stopped_at = state.frames
        state.error = source.error


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
