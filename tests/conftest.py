"""Shared fixtures: synthetic videos written with OpenCV (real files, read back by the code under test).
Shared functions live in helpers.py."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest
import torch

from helpers import write_video

SHARED_FOOTAGE = Path(__file__).resolve().parents[1].parent / "shared" / "footage"

# tests share 2 cores with everything else; keep torch from oversubscribing them
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

# the commands tests start stand for programs started from a terminal. A harness that runs pytest with SIGINT
# or SIGHUP ignored (nohup, or a background job of a non-interactive shell) would hand the ignoring on
# through exec, and the Ctrl-C and hang-up tests would then test the harness; a handled signal is reset to
# its default in the child instead
for _sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
    if signal.getsignal(_sig) == signal.SIG_IGN:
        signal.signal(_sig, signal.default_int_handler if _sig == signal.SIGINT else signal.SIG_DFL)

# TensorRT engines that tests build (on a GPU machine) go to a folder of their own, removed at exit, never
# into the user's ~/.cache/autoencoded/engines; the environment carries it into the commands tests start
_ENGINE_CACHE = tempfile.TemporaryDirectory(prefix="autoencoded-test-cache-")
os.environ["AUTOENCODED_CACHE"] = _ENGINE_CACHE.name


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


@pytest.fixture
def tmpfs(tmp_path):
    """tmpfs(size="256k", readonly=False) -> a freshly mounted small file system (a full disk, a read-only
    one); unmounted afterwards. Skips where mounting is not allowed (not root)."""
    mounted: list[Path] = []

    def _mount(size: str = "256k", readonly: bool = False) -> Path:
        mnt = tmp_path / f"fs{len(mounted)}"
        mnt.mkdir()
        opts = f"size={size}" + (",ro" if readonly else "")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(mnt)], capture_output=True)
        if r.returncode != 0:
            pytest.skip("cannot mount a tmpfs here (needs root)")
        mounted.append(mnt)
        return mnt

    yield _mount
    for mnt in mounted:
        subprocess.run(["umount", str(mnt)], check=False)
