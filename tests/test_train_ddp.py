"""Data parallel: 2 CPU processes (torchrun, gloo) match one process at the same global batch.

BatchNorm statistics are per process (no SyncBatchNorm: it has no CPU kernel), so the single-process
reference splits its batch into the same two halves with --accum 2: the same normalisation groups, the
same data shares, the same noise draws, gradients averaged the same way. Losses and weights then agree up
to floating-point summation order.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from autoencoded.training.weights import load_weights

from helpers import make_dataset, metrics

REPO = Path(__file__).resolve().parents[1]
ARGS = ["--steps", "4", "--batch", "8", "--checkpoint-every", "4", "--seed", "5", "--device", "cpu",
        "--no-progress", "--z-dim", "16"]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed support")
def test_two_gloo_processes_match_one_process(tmp_path):
    ds = make_dataset(tmp_path / "ds", n=16)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one, two = tmp_path / "one", tmp_path / "two"
    r1 = subprocess.run([sys.executable, "-m", "autoencoded", "train", str(ds), "-o", str(one), "--accum", "2",
                         *ARGS], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r1.returncode == 0, r1.stderr
    r2 = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                         "-m", "autoencoded", "train", str(ds), "-o", str(two), *ARGS],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r2.returncode == 0, r2.stderr[-3000:]
    m1, m2 = metrics(one), metrics(two)
    assert sorted(m1) == sorted(m2) == [1, 2, 3, 4]
    for s in m1:
        for k in ("kl", "sim", "pix", "bce_real", "bce_recon", "bce_prior", "dis", "enc", "dec"):
            assert m2[s][k] == pytest.approx(m1[s][k], rel=1e-3, abs=1e-5), (s, k)
        assert m2[s]["train_dis"] == m1[s]["train_dis"]
    _, w1, _ = load_weights(one / "checkpoints" / "step-0000004.safetensors")
    _, w2, _ = load_weights(two / "checkpoints" / "step-0000004.safetensors")
    for k, v in w1.items():
        if "running" in k or "num_batches" in k:
            continue  # per-process BN statistics: recalibrated on each side's own passes
        assert torch.allclose(v, w2[k], rtol=1e-3, atol=1e-5), k
    assert json.loads((two / "config.json").read_text())["batch"] == 8
