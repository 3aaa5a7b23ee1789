"""Every bad value is one line and exit 2, never exit 1 "internal error", and nothing half-written is left:
nan, inf, negative or huge numbers for train; read-only and full output folders for train, export and
`bench --json`. Through the real command (in process)."""

from __future__ import annotations

import pytest

from autoencoded.cli import main

from helpers import make_dataset, tiny_checkpoint


def one_line_error(capsys, *words: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    for w in words:
        assert w in err, err
    return err


@pytest.mark.parametrize("option, value", [
    ("--lr", "nan"), ("--lr", "inf"), ("--lr", "-1e-4"), ("--epochs", "nan"), ("--epochs", "inf"),
    ("--epochs", "-2"), ("--gamma", "nan"), ("--kl-weight", "-1"), ("--lr-dis", "inf"), ("--seed", str(2**70)), ("--seed", "-1"),
    ("--z-dim", str(10**9)), ("--size", "100000x100000"),
])
def test_train_refuses_bad_numbers(tmp_path, capsys, option, value):
    ds = make_dataset(tmp_path / "ds", n=8)
    assert main(["train", str(ds), "-o", str(tmp_path / "run"), "--steps", "1", "--batch", "4", option, value]) == 2
    one_line_error(capsys, option)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, says", [
    (["--batch", "1", "--steps", "1"], "--batch 1: must be at least 2"),
    (["--batch", "0", "--steps", "1"], "--batch 0: must be at least 2"),
    (["--batch", "4", "--accum", "4", "--steps", "1"], "--batch 4: must be at least 8"),
    (["--batch", "4", "--steps", "0"], "--steps 0: must be at least 1"),
    (["--batch", "4", "--epochs", "0"], "--epochs 0: must be more than 0"),
])
def test_train_refuses_counts_that_train_nothing(tmp_path, capsys, args, says):
    """--batch 1 failed inside BatchNorm after making the run, 0 divided by zero, and --steps 0 / --epochs 0
    trained a whole epoch: each is one line before anything is made."""
    ds = make_dataset(tmp_path / "ds", n=8)
    assert main(["train", str(ds), "-o", str(tmp_path / "run"), *args]) == 2
    one_line_error(capsys, says)
    assert not (tmp_path / "run").exists()


def fill(folder) -> None:
    """Fill a file system to the last byte."""
    with open(folder / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


@pytest.mark.parametrize("state", ["read-only", "full"])
def test_train_into_a_read_only_or_full_folder(tmp_path, capsys, tmpfs, state):
    fs = tmpfs(readonly=state == "read-only")
    if state == "full":
        fill(fs)
    ds = make_dataset(tmp_path / "ds", n=8)
    assert main(["train", str(ds), "-o", str(fs / "run"), "--steps", "2", "--batch", "4", "--no-progress"]) == 2
    one_line_error(capsys, "Read-only file system" if state == "read-only" else "No space left")
    assert not list(fs.rglob("*.safetensors")), "no torn checkpoint"


@pytest.mark.parametrize("state", ["read-only", "full"])
def test_export_into_a_read_only_or_full_folder(tmp_path, capsys, tmpfs, state):
    ckpt = tiny_checkpoint(tmp_path / "tiny.safetensors")
    fs = tmpfs(readonly=state == "read-only")
    assert main(["export", str(ckpt), "-o", str(fs / "model")]) == 2
    one_line_error(capsys, "Read-only file system" if state == "read-only" else "No space left")
    assert [p.name for p in fs.iterdir()] == [], "no partial pack left behind"


@pytest.mark.parametrize("state", ["read-only", "full"])
def test_bench_json_into_a_read_only_or_full_folder(tmp_path, capsys, tmpfs, state):
    fs = tmpfs(readonly=state == "read-only")
    if state == "full":
        fill(fs)
    args = ["bench", "--backend", "onnxruntime", "--arch", "lite", "--seconds", "0.05", "--max-batch", "1",
            "--json", str(fs / "bench.json")]
    assert main(args) == 2
    err = one_line_error(capsys, "Read-only file system" if state == "read-only" else "No space left")
    if state == "read-only":
        assert "measuring" not in capsys.readouterr().out + err  # said before minutes of measuring
    assert not (fs / "bench.json").exists()
    assert [p.name for p in fs.iterdir()] in ([], ["filler"])
