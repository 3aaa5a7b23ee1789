"""Checkpoint files: exact round trip, pruning, no pickle ever, kill-safety and full-disk safety."""

from __future__ import annotations

import json
import os
import pickle
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from autoencoded.errors import UserError
from autoencoded.training.checkpoints import Checkpoints, optimizer_from_flat, optimizer_to_flat
from autoencoded.training.model import ModelConfig, build
from autoencoded.training.weights import load_weights, resolve_checkpoint

from helpers import TINY, cli, make_dataset

REPO = Path(__file__).resolve().parents[1]


def _model_and_opts():
    cfg = ModelConfig.preset("lite", width=64, height=48, **TINY)
    torch.manual_seed(0)
    m = build(cfg)
    opts = {k: torch.optim.Adam(getattr(m, k).parameters(), lr=1e-3, betas=(0.5, 0.999))
            for k in ("encoder", "decoder", "discriminator")}
    x = torch.randn(2, 3, 48, 64)
    for _ in range(2):
        mu, _ = m.encoder(x)
        loss = m.decoder(mu).square().mean() + m.discriminator(x)[0].mean()
        loss.backward()
        for o in opts.values():
            o.step()
            o.zero_grad()
    return cfg, m, opts


def test_optimizer_state_round_trips_exactly():
    _, m, opts = _model_and_opts()
    tensors, meta = optimizer_to_flat("encoder", opts["encoder"])
    meta = json.loads(json.dumps(meta))  # as stored: JSON
    fresh = torch.optim.Adam(m.encoder.parameters(), lr=5.0)
    optimizer_from_flat("encoder", fresh, tensors, meta, torch.device("cpu"))
    a, b = opts["encoder"].state_dict(), fresh.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for i in a["state"]:
        for k in a["state"][i]:
            assert torch.equal(a["state"][i][k], b["state"][i][k])


def test_keep_last_k_plus_best(tmp_path):
    cfg, m, opts = _model_and_opts()
    ck = Checkpoints(tmp_path, keep=2)
    scores = {1: 0.5, 2: 0.1, 3: 0.4, 4: 0.3, 5: 0.35}
    for step, score in scores.items():
        ck.save(step, cfg, m.state_dict(), opts, {"step": step}, {"noise": 1.0}, score=score)
    assert ck.steps() == [2, 4, 5]
    index = json.loads((tmp_path / "checkpoints" / "index.json").read_text())
    assert index["latest"] == "step-0000005.safetensors" and index["best"] == "step-0000002.safetensors"
    assert resolve_checkpoint(tmp_path, "best").name == "step-0000002.safetensors"
    cfg2, w, tensors, state = ck.load(ck.latest())
    assert cfg2 == cfg and state["step"] == 5 and "rng.torch" in tensors
    assert all(torch.equal(w[k], v) for k, v in m.state_dict().items())


def _evil_pickle(path: Path, marker: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"state_dict": Payload()}))


def test_pickle_checkpoint_is_refused_and_its_payload_never_runs(tmp_path, capsys):
    marker = tmp_path / "pwned.txt"
    evil = tmp_path / "model.ckpt"
    _evil_pickle(evil, marker)
    with pytest.raises(UserError, match="never pickles"):
        load_weights(evil)
    assert not marker.exists()
    # the same file planted in a run as its latest checkpoint: --resume refuses it with one line
    ds = make_dataset(tmp_path / "ds", n=8)
    run = tmp_path / "run"
    assert cli("train", ds, "-o", run, "--steps", 1, "--batch", 4, "--no-progress") == 0
    capsys.readouterr()
    ckdir = run / "checkpoints"
    _evil_pickle(ckdir / "step-0000009.safetensors", marker)
    (ckdir / "step-0000009.state.safetensors").write_bytes(pickle.dumps(1))
    (ckdir / "index.json").write_text(json.dumps({"latest": "step-0000009.safetensors"}))
    assert cli("train", ds, "-o", run, "--resume", "--steps", 2) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "safetensors" in err
    assert not marker.exists()


SAVE_LOOP = """
import sys, torch
from autoencoded.training.checkpoints import Checkpoints
from autoencoded.training.model import ModelConfig, build
cfg = ModelConfig.preset("lite")  # full size at 256x144: ~16 MB of weights per save
m = build(cfg)
ck = Checkpoints(sys.argv[1], keep=2)
step = 0
while True:
    step += 1
    with torch.no_grad():
        for p in m.parameters():
            p.fill_(float(step))
    ck.save(step, cfg, m.state_dict(), {}, {"step": step}, {"noise": 1.0}, score=1.0 / step)
    print(step, flush=True)
"""


def test_sigkill_during_a_save_leaves_the_previous_checkpoint_loadable(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", SAVE_LOOP, str(tmp_path)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if int(line) >= 3:
                break
        time.sleep(0.05)  # the loop does nothing but save: this lands inside a write
    finally:
        proc.kill()
        proc.wait()
    ck = Checkpoints(tmp_path, keep=2)
    latest = ck.latest()
    assert latest is not None
    cfg, weights, _, state = ck.load(latest)
    step = state["step"]
    assert step >= 3
    # the weights are those of that step, complete
    assert all(torch.all(v == float(step)) for k, v in weights.items() if v.is_floating_point()
               and "running" not in k)
    ck.clean_temps()
    assert not list((tmp_path / "checkpoints").glob(".*.tmp"))


def test_full_disk_during_a_save_is_one_line_and_keeps_the_previous_checkpoint(tmp_path):
    ds = make_dataset(tmp_path / "ds", n=8)
    run = tmp_path / "run"
    assert cli("train", ds, "-o", run, "--steps", 2, "--batch", 4, "--checkpoint-every", 2, "--no-progress") == 0
    before = Checkpoints(run).latest()
    assert before.name == "step-0000002.safetensors"
    limit = before.stat().st_size // 2  # logs, config and samples fit; a checkpoint does not

    def small_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "autoencoded", "train", str(ds), "-o", str(run), "--resume",
                          "--steps", "4", "--no-progress"], cwd=REPO, env=env, preexec_fn=small_disk,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.startswith("error")]
    assert len(lines) == 1 and "could not write checkpoint" in lines[0] and "Traceback" not in res.stderr
    ck = Checkpoints(run)
    assert ck.latest() == before
    cfg, _, _, state = ck.load(before)
    assert state["step"] == 2
    assert not list((run / "checkpoints").glob(".*.tmp"))
