"""The foreign frames shipped with the package, and training's structure on them at each evaluation."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from autoencoded import metrics
from autoencoded.training.foreign import ASSETS, foreign_frames

from helpers import cli, make_dataset


def test_the_shipped_foreign_frames_are_framed_at_the_runs_size():
    names = sorted(p.name for p in ASSETS.glob("foreign_*.png"))
    assert len(names) == 5
    credits = (ASSETS / "README.md").read_text()
    assert all(n in credits for n in names)
    wide = foreign_frames(256, 144)
    assert wide.shape == (5, 144, 256, 3) and wide.dtype == np.uint8
    # RGB, as datasets are: the portrait's orange suit is red above blue
    portrait = wide[names.index("foreign_astronaut.png")]
    assert portrait[..., 0].mean() > portrait[..., 2].mean()
    # a 4:3 run takes the centre of each 16:9 frame, as `prepare --crop center` would
    small = foreign_frames(64, 48)
    assert small.shape == (5, 48, 64, 3)
    centre = cv2.resize(wide[0][:, 32:224], (64, 48), interpolation=cv2.INTER_AREA)
    assert np.abs(small[0].astype(int) - centre.astype(int)).mean() < 3
    # pictures with a composition to keep, and four of five in colour
    assert all(metrics.structure(f, f) > 0.99 for f in wide)
    assert sorted(metrics.colourfulness_frames(wide) > 10) == [False, True, True, True, True]


def test_training_logs_structure_on_the_foreign_frames_at_each_evaluation(tmp_path, capsys):
    ds = make_dataset(tmp_path / "ds")
    run = tmp_path / "run"
    assert cli("train", ds, "-o", run, "--steps", 2, "--batch", 4, "--checkpoint-every", 1, "--no-progress",
               "--device", "cpu") == 0
    assert capsys.readouterr().err.count("structure on foreign frames") == 2  # the log: stderr
    evals = [r for line in (run / "metrics.jsonl").read_text().splitlines() if "eval" in (r := json.loads(line))]
    assert [r["step"] for r in evals] == [1, 2]
    for r in evals:
        assert -1 <= r["eval"]["structure_foreign"] <= 1 and r["eval"]["colourfulness_foreign"] >= 0
        assert math.isfinite(r["eval"]["psnr"])
    side = json.loads((run / "checkpoints" / "step-0000002.json").read_text())
    assert side["eval"]["structure_foreign"] == evals[-1]["eval"]["structure_foreign"]
    logs = EventAccumulator(str(run / "logs"))
    logs.Reload()
    steps = [e.step for e in logs.Scalars("eval/structure_foreign")]
    assert steps == [1, 2]
    assert [e.value for e in logs.Scalars("eval/structure_foreign")] == \
        pytest.approx([r["eval"]["structure_foreign"] for r in evals], abs=1e-6)  # float32 in the logs
