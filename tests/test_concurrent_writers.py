"""What others do to a job's files while it runs (issue 34, item 9): two exports into one new pack folder at
once (one writes it, the other is refused in one line, never both saying "wrote"); a dataset truncated,
rewritten or replaced under a reader (one DatasetChanged line, never SIGBUS), and under a real training
process (one line, exit 2, its last checkpoint intact and loadable). Real processes, real files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autoencoded.fileio import Claim
from autoencoded.live.engines.pack import read_pack
from autoencoded.training.checkpoints import Checkpoints
from autoencoded.training.data import DatasetChanged, open_dataset
from autoencoded.training.weights import sha256_file

from helpers import make_dataset, tiny_checkpoint

CLI = [sys.executable, "-m", "autoencoded"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def one_line(text: str) -> str:
    text = text.strip()
    assert text and "\n" not in text and "Traceback" not in text, text
    return text


# ---- two exports into one folder -----------------------------------------------------------------------------

def test_two_exports_into_one_new_folder_at_once_write_one_pack(tmp_path):
    a, b = tiny_checkpoint(tmp_path / "a.safetensors", seed=0), tiny_checkpoint(tmp_path / "b.safetensors", seed=1)
    out = tmp_path / "packs" / "model"
    procs = [subprocess.Popen([*CLI, "export", str(ck), "-o", str(out)], env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for ck in (a, b)]
    results = [p.communicate(timeout=300) for p in procs]
    codes = [p.returncode for p in procs]
    wrote = [i for i, (said, _) in enumerate(results) if "wrote model pack" in said]
    assert len(wrote) == 1 and sorted(codes) == [0, 2], (codes, results)
    loser = 1 - wrote[0]
    refusal = one_line(results[loser][1])
    assert "another autoencoded" in refusal or "already exists" in refusal, refusal
    # the pack that is there is whole, and it is the one its exporter said it wrote
    meta = json.loads((out / "model.json").read_text())
    assert meta["source_sha256"] == sha256_file((a, b)[wrote[0]])
    read_pack(out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["model"], "no temp folder or lock left behind"


def test_an_export_into_a_pack_another_is_writing_is_refused_and_touches_nothing(tmp_path):
    ck = tiny_checkpoint(tmp_path / "a.safetensors")
    out = tmp_path / "model"
    with Claim(out, "a model pack"):  # what a running export holds on its pack's name
        r = subprocess.run([*CLI, "export", str(ck), "-o", str(out), "--overwrite"], env=ENV, capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 2 and "wrote" not in r.stdout, (r.stdout, r.stderr)
        assert f"another autoencoded (pid {os.getpid()}) is writing a model pack there" in one_line(r.stderr)
        assert not out.exists() and not list(tmp_path.glob(".model.partial-*"))
    # `memory` into a pack is refused on the same claim
    assert subprocess.run([*CLI, "export", str(ck), "-o", str(out)], env=ENV, capture_output=True,
                          timeout=300).returncode == 0
    with Claim(out, "a model pack"):
        r = subprocess.run([*CLI, "memory", str(out), str(make_dataset(tmp_path / "ds", n=8))], env=ENV,
                           capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "is writing a model pack there" in one_line(r.stderr), r.stderr
    assert not (out / "memory.safetensors").exists()


# ---- a dataset changed under its reader ----------------------------------------------------------------------

def _truncate(npy: Path) -> None:
    os.truncate(npy, npy.stat().st_size // 2)


def _replace(npy: Path) -> None:
    tmp = npy.with_name("other.npy")
    tmp.write_bytes(npy.read_bytes())
    os.replace(tmp, npy)


def _rewrite(npy: Path) -> None:
    """Same size, new content, in place (`cp other frames.npy`)."""
    data = bytearray(npy.read_bytes())
    data[-10:] = b"\xff" * 10
    time.sleep(0.01)
    npy.write_bytes(bytes(data))


@pytest.mark.parametrize("change", [_truncate, _replace, _rewrite], ids=["truncated", "replaced", "rewritten"])
def test_a_dataset_changed_under_its_reader_is_one_line(tmp_path, change):
    ds = open_dataset(make_dataset(tmp_path / "ds", n=12))
    first = ds.batch([0, 11])
    change(tmp_path / "ds" / "frames.npy")
    for read in (lambda: ds.batch([11]), lambda: ds.batch([0, 1]), lambda: ds[0]):
        with pytest.raises(DatasetChanged) as e:
            read()
        one_line(str(e.value))
    assert first.shape == (2, 48, 64, 3)


def test_a_truncated_dataset_under_a_training_process_is_one_line_and_a_kept_checkpoint(tmp_path):
    ds = make_dataset(tmp_path / "ds", n=64)
    run = tmp_path / "run"
    proc = subprocess.Popen([*CLI, "train", str(ds), "-o", str(run), "--steps", "100000", "--batch", "4",
                             "--checkpoint-every", "2", "--no-progress"], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while True:  # a few checkpoints in: training is reading its frames step after step
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            index = run / "checkpoints" / "index.json"
            if index.is_file() and json.loads(index.read_text())["latest"] >= "step-0000004":
                break
            time.sleep(0.1)
        _truncate(ds / "frames.npy")
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, (proc.returncode, -proc.returncode == signal.SIGBUS, err[-2000:])
    line = one_line(err.strip().splitlines()[-1])
    assert "frames.npy" in line and "training stopped at step" in line and "is kept" in line, line
    assert "Traceback" not in err
    ck = Checkpoints(run)
    latest = ck.latest()
    assert latest is not None and latest.name in line
    cfg, _, _, state = ck.load(latest)
    assert cfg.arch == "lite" and state["step"] >= 4
    assert not list((run / "checkpoints").glob("*.tmp")) and not list((run / "checkpoints").glob(".*"))
