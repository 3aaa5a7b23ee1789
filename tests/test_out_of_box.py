"""Out of the box: the bundled demo model and clip, through README's first command run headless.

README's first command ends in `autoencoded live` with no arguments. Here it runs with a frame limit, no
display and no camera, so it must pick the demo clip and record to ./autoencoded-live.mp4; the frames it
writes must come from the demo model (closer to the model's reconstructions than to the input).
"""

from __future__ import annotations

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from autoencoded.live.assets import DEMO_CLIP, DEMO_MODEL_DIR
from autoencoded.live.engines import open_engine
from autoencoded.live.engines.frames import fit

from helpers import read_video


def _headless_env():
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def test_demo_assets_are_bundled():
    assert DEMO_CLIP.is_file()
    assert (DEMO_MODEL_DIR / "model.json").is_file()
    size = sum(f.stat().st_size for f in DEMO_MODEL_DIR.iterdir())
    assert size <= 25 * 2**20
    with open_engine(None, backend="onnxruntime", log=lambda *_: None) as engine:
        assert (engine.width, engine.height) == (256, 144)


def test_readme_first_command_headless_plays_the_demo_through_the_demo_model(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "autoencoded", "live", "--max-frames", "40"],
                          cwd=tmp_path, env=_headless_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    said = proc.stdout + proc.stderr
    assert "demo" in said and "autoencoded-live.mp4" in said
    out = read_video(tmp_path / "autoencoded-live.mp4")
    assert len(out) >= 30 and out[0].shape == (720, 1280, 3)

    clip = [fit(f, 256, 144) for f in read_video(DEMO_CLIP)]
    with open_engine(None, backend="onnxruntime", log=lambda *_: None) as engine:
        recon = np.concatenate([engine.reconstruct(np.stack(clip[i:i + 16])) for i in range(0, len(clip), 16)])
    inputs = np.stack(clip).astype(np.float32)
    recon = recon.astype(np.float32)
    d_input, d_model = [], []
    for frame in out[5:]:
        small = cv2.resize(frame, (256, 144), interpolation=cv2.INTER_AREA).astype(np.float32)
        d_input.append(np.abs(inputs - small).mean(axis=(1, 2, 3)).min())
        d_model.append(np.abs(recon - small).mean(axis=(1, 2, 3)).min())
    # the output is not the input passed through, and it is what the demo model makes of it
    assert np.median(d_input) > 8.0
    assert np.median(d_model) < 0.5 * np.median(d_input)


@pytest.mark.parametrize("extra", [[], ["--side-by-side"]])
def test_render_uses_the_demo_model_by_default(tmp_path, extra):
    out = tmp_path / "demo.mp4"
    proc = subprocess.run([sys.executable, "-m", "autoencoded", "render", "demo", str(out), *extra],
                          env=_headless_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    frames = read_video(out)
    assert len(frames) == len(read_video(DEMO_CLIP))
    assert frames[0].shape[1] == (512 if extra else 256)
