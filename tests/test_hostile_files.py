"""Files a user hands in, made hostile: JSON and TOML nested thousands deep, and a checkpoint whose config asks
for gigabytes beside megabytes of weights. Each is one line and exit 2 through the real command, never an
"internal error" (exit 1) or a model built first."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import safe_open

from autoencoded.export.onnx_export import random_pack
from autoencoded.training.weights import load_weights, save_weights

from helpers import cli, make_dataset, tiny_checkpoint

REPO = Path(__file__).resolve().parents[1]
DEEP = 100_000  # levels: far past Python's recursion limit, and still only 200 kB
DEEP_JSON = "[" * DEEP + "]" * DEEP


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "internal error" not in err, err
    return err


def rewrite_config(ckpt: Path, out: Path, config_json: str) -> Path:
    """The same tensors under another config string (what a hand-edited or hostile file carries)."""
    with safe_open(str(ckpt), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    from safetensors.torch import save_file
    meta["config"] = config_json
    save_file(tensors, str(out), metadata=meta)
    return out


def test_deeply_nested_dataset_json(tmp_path, capsys):
    ds = make_dataset(tmp_path / "ds", n=8)
    (ds / "dataset.json").write_text(DEEP_JSON)
    assert cli("train", ds, "-o", tmp_path / "run", "--steps", 1) == 2
    assert "nested too deeply" in one_error_line(capsys)


def test_deeply_nested_model_json(tmp_path, capsys):
    pack = random_pack("lite", tmp_path / "pack", width=64, height=48).path
    (pack / "model.json").write_text('{"format": ' + DEEP_JSON + "}")
    assert cli("bench", "--model", pack, "--backend", "onnxruntime", "--seconds", "0.05") == 2
    assert "nested too deeply" in one_error_line(capsys)


def test_deeply_nested_checkpoint_config(tmp_path, capsys):
    ckpt = rewrite_config(tiny_checkpoint(tmp_path / "a.safetensors"), tmp_path / "step-0000001.safetensors",
                          DEEP_JSON)
    assert cli("export", ckpt, "-o", tmp_path / "pack") == 2
    assert "bad model config" in one_error_line(capsys)
    assert not (tmp_path / "pack").exists()


def test_deeply_nested_run_config_on_resume(tmp_path, capsys):
    ds = make_dataset(tmp_path / "ds", n=8)
    run = tmp_path / "run"
    assert cli("train", ds, "-o", run, "--steps", 1, "--batch", 4, "--z-dim", 16, "--no-progress") == 0
    capsys.readouterr()
    (run / "config.json").write_text('{"arch": ' + DEEP_JSON + "}")
    assert cli("train", ds, "-o", run, "--resume", "--steps", 2) == 2
    assert "nested too deeply" in one_error_line(capsys)


@pytest.mark.parametrize("shape", ["array", "inline-table"])
def test_deeply_nested_preset_toml(tmp_path, capsys, shape):
    preset = tmp_path / "deep.toml"
    n = 20_000
    value = "[" * n + "]" * n if shape == "array" else "{a = " * n + "1" + "}" * n
    preset.write_text(f"description = {value}\n")
    assert cli("live", "--preset", preset, "--input", "demo", "--output", "null", "--duration", "0.1") == 2
    assert "not valid TOML: TOML nested too deeply" in one_error_line(capsys)


def test_a_checkpoint_config_asking_for_gigabytes_is_refused_before_building(tmp_path):
    """A 9 MB checkpoint of a 64x48 model whose config says 6912x3888: its two FC layers alone would be
    3.4 GB. The config is checked against the tensors on the meta device, so nothing that size is made."""
    ckpt = tiny_checkpoint(tmp_path / "a.safetensors")
    cfg, _, _ = load_weights(ckpt)
    big = dataclasses.replace(cfg, width=6912, height=3888)
    hostile = rewrite_config(ckpt, tmp_path / "step-0000001.safetensors", big.to_json())
    assert hostile.stat().st_size < 20e6
    probe = ("import resource, sys\nfrom autoencoded.cli import main\nrc = main(sys.argv[1:])\n"
             "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\nsys.exit(rc)\n")
    r = subprocess.run([sys.executable, "-c", probe, "export", str(hostile), "-o", str(tmp_path / "pack")],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    *lines, peak_kb = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and "does not match its weights" in lines[0]
    assert "encoder.fc.weight" in lines[0] or "encoder." in lines[0]
    assert int(peak_kb) < 1.5e6  # kB: the process never came near the 3.4 GB the config asked for
    assert not (tmp_path / "pack").exists()


def test_a_consistent_checkpoint_still_loads(tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "a.safetensors")
    cfg, state, _ = load_weights(ckpt)
    again = tmp_path / "b.safetensors"
    save_weights(again, cfg, state)
    assert load_weights(again)[0] == cfg
    assert json.loads(load_weights(again)[2]["config"])["width"] == 64
