"""Shared fixtures: synthetic videos written with OpenCV (real files, read back by the code under test)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

SHARED_FOOTAGE = Path(__file__).resolve().parents[1].parent / "shared" / "footage"

# tests share 2 cores with everything else; keep torch from oversubscribing them
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def synthetic_frame(i: int, width: int, height: int) -> np.ndarray:
    """A BGR frame that changes every index: a moving gradient with a bright square (never static)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    b = (xx / max(width - 1, 1) * 255 + i * 7) % 256
    g = (yy / max(height - 1, 1) * 255 + i * 3) % 256
    r = ((xx + yy) / max(width + height - 2, 1) * 255 + i * 11) % 256
    img = np.stack([b, g, r], axis=-1).astype(np.uint8)
    s = max(4, min(width, height) // 6)
    x0 = (i * 5) % max(1, width - s)
    y0 = (i * 3) % max(1, height - s)
    img[y0:y0 + s, x0:x0 + s] = 255
    return img


def write_video(path: Path, n_frames: int = 24, width: int = 320, height: int = 180, fps: float = 24.0,
                fourcc: str = "mp4v", frame_fn=synthetic_frame) -> Path:
    """Write a real video file with OpenCV and return its path."""
    path = Path(path)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {fourcc} to {path}")
    for i in range(n_frames):
        writer.write(frame_fn(i, width, height))
    writer.release()
    return path


def read_video(path, limit: int | None = None) -> list[np.ndarray]:
    """Every frame of a video file (or the first `limit`), decoded by OpenCV, as RGB uint8 arrays."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    while limit is None or len(frames) < limit:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    return frames


@pytest.fixture
def make_video(tmp_path):
    """make_video(name="clip.mp4", n_frames=24, width=320, height=180, fps=24.0, fourcc="mp4v", frame_fn=...)"""

    def _make(name: str = "clip.mp4", **kw) -> Path:
        return write_video(tmp_path / name, **kw)

    return _make


@pytest.fixture
def shared_footage():
    """The real Big Buck Bunny clips beside the repository; skipped (with the reason) where absent."""
    if not (SHARED_FOOTAGE / "bigbuckbunny.mp4").is_file():
        pytest.skip(f"shared footage not present at {SHARED_FOOTAGE}")
    return SHARED_FOOTAGE
