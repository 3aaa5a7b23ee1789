"""Shared fixtures: synthetic videos written with OpenCV (real files, read back by the code under test).
Shared functions live in helpers.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from helpers import write_video

SHARED_FOOTAGE = Path(__file__).resolve().parents[1].parent / "shared" / "footage"

# tests share 2 cores with everything else; keep torch from oversubscribing them
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


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
