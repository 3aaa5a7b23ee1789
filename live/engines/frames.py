"""Frame conventions and the one place where frames become model tensors and back (numpy side).

Inside the project a frame is a uint8 numpy array H x W x 3 in RGB order. Sources convert from
OpenCV's BGR on the way in, sinks convert back on the way out. Model inputs are float32
N x 3 x H x W in [-1, 1]; outputs come back the same way. Every backend (onnxruntime, tensorrt,
torch) calls these two functions, so they all see the same numbers.
"""

from __future__ import annotations

import cv2
import numpy as np


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


def fit(frame: np.ndarray, width: int, height: int, mode: str = "center") -> np.ndarray:
    """Resize a frame to exactly width x height.

    mode "center": crop the middle to the target aspect, then resize; "fit": stretch.
    Downscaling uses area filtering, in two steps when shrinking by more than 2x (same look, ~3x faster).
    """
    h, w = frame.shape[:2]
    if (w, h) == (width, height):
        return frame
    if mode == "center":
        target = width / height
        if w / h > target:
            cw = max(1, round(h * target))
            x0 = (w - cw) // 2
            frame = frame[:, x0:x0 + cw]
        elif w / h < target:
            ch = max(1, round(w / target))
            y0 = (h - ch) // 2
            frame = frame[y0:y0 + ch]
        h, w = frame.shape[:2]
    if w > 4 * width and h > 4 * height:
        frame = cv2.resize(frame, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
        h, w = frame.shape[:2]
    interp = cv2.INTER_AREA if (w >= width and h >= height) else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(frame), (width, height), interpolation=interp)


def upscale(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """Model output (small) -> output size, smooth (the hazy look survives the upscale)."""
    if frame.shape[1] == width and frame.shape[0] == height:
        return frame
    return cv2.resize(frame, (width, height), interpolation=cv2.INTER_CUBIC)


def is_finite_image(x: np.ndarray) -> bool:
    return bool(np.isfinite(x).all()) if x.dtype.kind == "f" else True
