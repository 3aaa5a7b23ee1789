"""Export: a CPU-trained tiny model -> model pack, verified against torch on real video frames."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from autoencoded.cli import main
from autoencoded.live.engines.pack import read_pack
from autoencoded.training.model import ModelConfig, build
from autoencoded.training.weights import save_weights

W, H = 64, 48


def train_tiny_run(root: Path, steps: int = 3, **model) -> Path:
    """A few real optimisation steps of the VAE on random images, saved as a run folder with sidecar."""
    torch.manual_seed(0)
    cfg = ModelConfig.preset("lite", width=W, height=H, **model)
    model = build(cfg)
    opt = torch.optim.Adam([*model.encoder.parameters(), *model.decoder.parameters()], 1e-3)
    x = torch.rand(4, 3, H, W) * 2 - 1
    for _ in range(steps):
        mu, log_sigma = model.encoder(x)
        y = model.decoder(mu + log_sigma.exp() * torch.randn_like(mu))
        loss = (y - x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    ck = root / "run" / "checkpoints"
    ck.mkdir(parents=True)
    save_weights(ck / f"step-{steps:07d}.safetensors", cfg, model.state_dict(), {"step": steps})
    (ck / f"step-{steps:07d}.json").write_text(json.dumps({"step": steps, "losses": {"rec": loss.item()}}))
    return root / "run"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return train_tiny_run(tmp_path_factory.mktemp("export"))


def test_export_verify_on_real_frames(run_dir, make_video, tmp_path, capsys):
    video = make_video("clip.mp4", n_frames=12, width=160, height=90)
    out = tmp_path / "model"
    assert main(["export", str(run_dir), "-o", str(out), "--verify", "--frames", str(video)]) == 0
    printed = capsys.readouterr().out
    assert "PSNR" in printed and "clip.mp4" in printed
    meta = json.loads((out / "model.json").read_text())
    assert meta["format"] == "autoencoded-model" and meta["format_version"] == 1
    assert (meta["arch"], meta["width"], meta["height"], meta["z_dim"]) == ("lite", W, H, 256 + (W // 2) * (H // 2))  # the code and the layout
    assert meta["verify"]["ok"] and meta["verify"]["image"]["max_abs"] < 2e-3
    assert meta["verify"]["image"]["psnr_db"] >= 60
    assert meta["training"]["step"] == 3 and "rec" in meta["training"]["losses"]
    assert meta["source_sha256"] and meta["config"]["arch"] == "lite"
    pack = read_pack(out)  # recomputes the hash: matches model.json
    assert pack.model_hash == meta["model_hash"]
    # self-contained opset >= 17 files, BatchNorm folded into the convs, dynamic batch axis
    assert sorted(p.name for p in out.iterdir()) == ["decoder.onnx", "encoder.onnx", "model.json"]
    for role, m in pack.models.items():
        assert m.opset_import[0].version >= 17
        assert not any(n.op_type.startswith("BatchNorm") for n in m.graph.node), role
        first = m.graph.input[0].type.tensor_type.shape.dim[0]
        assert first.dim_param and not first.HasField("dim_value")
    assert not list(tmp_path.glob(".model.*"))  # no temp folder left behind


def test_a_bottom_grid_layout_exports_and_onnx_runtime_decodes_it_as_torch_does(tmp_path, make_video):
    """layout_scale 1 (the layout at the decoder's 4x3 bottom grid, the packs before the finer default): the
    pack's z_dim is the code and that grid, and verify holds on real frames."""
    run = train_tiny_run(tmp_path, layout_scale=1, layout=True, latent_channels=0, z_dim=256)
    video = make_video("clip.mp4", n_frames=12, width=160, height=90)
    assert main(["export", str(run), "-o", str(tmp_path / "model"), "--verify", "--frames", str(video)]) == 0
    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    assert meta["z_dim"] == 256 + (W // 16) * (H // 16) and meta["config"]["layout_scale"] == 1
    assert meta["verify"]["ok"] and meta["verify"]["image"]["psnr_db"] >= 60
    # live noise plays the learned code only, never the layout's cells
    assert meta["latent"] == {"learned": 256, "noise_scale": 1.0, "shape": None}


def test_export_refuses_existing_then_overwrites(run_dir, tmp_path, capsys):
    out = tmp_path / "model"
    assert main(["export", str(run_dir), "-o", str(out)]) == 0
    first = json.loads((out / "model.json").read_text())["created"]
    assert main(["export", str(run_dir), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--overwrite" in err
    assert main(["export", str(run_dir), "-o", str(out), "--overwrite", "--which", "latest"]) == 0
    assert read_pack(out).meta["created"] >= first
    other = tmp_path / "notapack"
    other.mkdir()
    (other / "precious.txt").write_text("x")
    assert main(["export", str(run_dir), "-o", str(other), "--overwrite"]) == 2
    assert (other / "precious.txt").is_file()


def test_verify_failure_leaves_no_pack(run_dir, tmp_path, monkeypatch, capsys):
    import autoencoded.live.engines.parity as parity
    monkeypatch.setattr(parity, "FP32_MAX_ABS", 0.0)  # a tolerance nothing can meet: torch != ORT bitwise
    out = tmp_path / "model"
    assert main(["export", str(run_dir), "-o", str(out), "--verify"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: verification failed") and "\n" not in err
    assert not out.exists() and not list(tmp_path.glob(".model*"))


class _Boom:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path(self.marker).touch, ())


def test_pickle_checkpoint_refused_without_unpickling(tmp_path, capsys):
    marker = tmp_path / "unpickled"
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(pickle.dumps({"state": _Boom(str(marker))}))
    pt = tmp_path / "model.pt"
    torch.save({"encoder.x": torch.zeros(2), "boom": _Boom(str(marker))}, pt)
    for path in (bad, pt):
        assert main(["export", str(path), "-o", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip()
        assert "not a safetensors weights file" in err and "\n" not in err
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_export_missing_source(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope"), "-o", str(tmp_path / "out")]) == 2
    assert "no such run folder" in capsys.readouterr().err


@pytest.mark.skipif(__import__("importlib").util.find_spec("tensorrt") is not None,
                    reason="tensorrt is installed here: the 'not installed' message cannot appear")
def test_export_tensorrt_without_tensorrt_is_one_line(run_dir, tmp_path, capsys):
    assert main(["export", str(run_dir), "-o", str(tmp_path / "m"), "--tensorrt"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --tensorrt cannot run: tensorrt is not installed (pip install 'autoencoded[gpu]')"
    assert not (tmp_path / "m").exists()


def test_fused_graph_matches_parts(run_dir, tmp_path):
    from autoencoded.live.engines.ort_backend import OnnxRuntimeEngine
    main(["export", str(run_dir), "-o", str(tmp_path / "m")])
    pack = read_pack(tmp_path / "m")
    fused = pack.fused()
    onnx.checker.check_model(fused)
    with OnnxRuntimeEngine(pack, device="cpu") as engine:
        frames = np.random.default_rng(1).integers(0, 256, (3, H, W, 3), dtype=np.uint8)
        mu, _ = engine.encode(frames)
        assert np.abs(engine.reconstruct(frames).astype(int) - engine.decode(mu).astype(int)).max() <= 1
