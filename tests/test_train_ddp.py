"""Data parallel: 2 CPU processes (torchrun, gloo) match one process at the same global batch.

BatchNorm statistics are per process (no SyncBatchNorm: it has no CPU kernel), so the single-process
reference splits its batch into the same two halves with --accum 2: the same normalisation groups, the
same data shares, the same noise draws, gradients averaged the same way. Losses and weights then agree up
to floating-point summation order.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from autoencoded.training.checkpoints import Checkpoints
from autoencoded.training.weights import load_weights

from helpers import make_dataset, metrics

REPO = Path(__file__).resolve().parents[1]
ARGS = ["--steps", "4", "--batch", "8", "--checkpoint-every", "4", "--seed", "5", "--device", "cpu",
        "--no-progress", "--z-dim", "16", "--adversarial-start", "0"]


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


def torchrun(ds: Path, run: Path, env: dict, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """The real command under torchrun (2 gloo ranks), through tests/ddp_worker.py's late/interrupted rank."""
    worker = Path(__file__).with_name("ddp_worker.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(worker),
           "train", str(ds), "-o", str(run), *ARGS, *args]
    # its own session, so that a hung job is killed with its workers (killing torchrun alone orphans them)
    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1", **env}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        pytest.fail(f"the 2-rank job hung (killed after {timeout:.0f} s): {err[-2000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed support")
def test_a_late_rank_neither_hangs_nor_skips_the_first_checkpoint_and_overwrite_is_rank_0s(tmp_path):
    """Rank 1 enters the run 4 s late, when rank 0 has written step 0 and waits in save()'s barrier. A rank
    that asked the disk whether the run is new would skip that save and hang the job; rank 0 decides."""
    ds = make_dataset(tmp_path / "ds", n=16)
    run = tmp_path / "run"
    old = torchrun(ds, run, {}, "--steps", "1")  # an earlier run that --overwrite replaces
    assert old.returncode == 0, old.stderr[-3000:]
    r = torchrun(ds, run, {"AE_LATE_RANK": "1", "AE_LATE_S": "4"}, "--overwrite")
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(metrics(run)) == [1, 2, 3, 4]  # the old run's log went with --overwrite
    assert Checkpoints(run).steps()[-1] == 4
    # resuming under the same delay: rank 0 names the checkpoint every rank loads
    r = torchrun(ds, run, {"AE_LATE_RANK": "1", "AE_LATE_S": "4"}, "--resume", "--steps", "6")
    assert r.returncode == 0, r.stderr[-3000:]
    assert max(metrics(run)) == 6


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed support")
def test_a_signal_on_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    """Only rank 1 gets SIGINT after step 2: both ranks stop after step 2, the checkpoint is saved, no hang."""
    ds = make_dataset(tmp_path / "ds", n=16)
    run = tmp_path / "run"
    r = torchrun(ds, run, {"AE_SIGINT_RANK": "1", "AE_SIGINT_STEP": "2"}, "--steps", "40",
                 "--checkpoint-every", "100")
    assert r.returncode != 0  # the workers exit 130 (interrupted), which torchrun reports as a failure
    assert "interrupted at step 2: checkpoint saved" in r.stderr, r.stderr[-3000:]
    assert max(metrics(run)) == 2
    index = json.loads((run / "checkpoints" / "index.json").read_text())
    assert index["latest"] == "step-0000002.safetensors"
