"""Frame conventions and the one place where frames become model tensors and back (numpy side).

Inside the project a frame is a uint8 numpy array H x W x 3 in RGB order. Sources convert from
OpenCV's BGR on the way in, sinks convert back on the way out. Model inputs are float32
N x 3 x H x W in [-1, 1]; outputs come back the same way. Every backend (onnxruntime, tensorrt,
torch) calls these two functions, so they all see the same numbers.
"""

from __future__ import annotations

import cv2
import numpy as np

from autoencoded.media.framing import frame_for, pad_to


def to_model_input(frames: np.ndarray) -> np.ndarray:
    """uint8 (H,W,3) or (N,H,W,3) RGB -> float32 (N,3,H,W) in [-1,1], C-contiguous."""
    if frames.ndim == 3:
        frames = frames[None]
    x = frames.astype(np.float32).transpose(0, 3, 1, 2)
    x *= 1.0 / 127.5
    x -= 1.0
    return np.ascontiguousarray(x)


def from_model_output(images: np.ndarray) -> np.ndarray:
    """float (N,3,H,W) in [-1,1] -> uint8 (N,H,W,3) RGB. NaN becomes mid-grey, Inf is clamped."""
    x = np.nan_to_num(np.asarray(images, dtype=np.float32), nan=0.0, posinf=1.0, neginf=-1.0)
    x = (np.clip(x, -1.0, 1.0) + 1.0) * 127.5
    return np.ascontiguousarray(np.rint(x).astype(np.uint8).transpose(0, 2, 3, 1))


def fit(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """A frame cropped to its centre at width x height's aspect and resized (--crop center, square pixels).
    Sources with another shape or pixel aspect go through an autoencoded.media.framing.Framing instead."""
    h, w = frame.shape[:2]
    if (w, h) == (width, height):
        return frame
    return frame_for(w, h, 1.0, "center", width, height).apply(frame, width, height)


def picture_size(aspect: float, width: int, height: int) -> tuple[int, int]:
    """The size of a picture of display aspect `aspect` scaled whole into width x height."""
    if abs(aspect - width / height) <= 1e-3 * aspect:
        return width, height
    if aspect > width / height:
        return width, max(1, min(height, round(width / aspect)))
    return max(1, min(width, round(height * aspect))), height


def upscale(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """Model output (small) -> width x height, smooth (the hazy look survives the upscale). Its aspect is
    kept: a frame of another shape gets black bars on its short sides (picture_size), never a stretch."""
    h, w = frame.shape[:2]
    if (w, h) == (width, height):
        return frame
    iw, ih = picture_size(w / h, width, height)
    return pad_to(cv2.resize(frame, (iw, ih), interpolation=cv2.INTER_CUBIC), width, height)
