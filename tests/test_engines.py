"""Runtime backends on a real exported pack: onnxruntime vs torch, open_engine's choices, bad packs."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch
from onnx import external_data_helper

from autoencoded.cli import main
from autoencoded.errors import UserError
from autoencoded.export.onnx_export import export_checkpoint
from autoencoded.live.engines import open_engine, tensorrt_unavailable
from autoencoded.live.engines.pack import read_pack
from autoencoded.training.model import AutoEncoder, ModelConfig
from autoencoded.training.weights import save_weights

from helpers import read_video

W, H = 64, 48


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("engines")
    torch.manual_seed(1)
    cfg = ModelConfig.preset("lite", width=W, height=H)
    ae = AutoEncoder(cfg)
    for m in ae.modules():  # non-trivial BatchNorm statistics, as after training
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    ckpt = root / "step-0000001.safetensors"
    save_weights(ckpt, cfg, ae.state_dict())
    export_checkpoint(ckpt, root / "pack", log=lambda s: None)
    return {"ckpt": ckpt, "pack": root / "pack", "root": root}


def video_frames(make_video, n: int = 6) -> np.ndarray:
    path = make_video("engines.mp4", n_frames=n, width=W * 2, height=H * 2)
    return np.stack([cv2.resize(rgb, (W, H), interpolation=cv2.INTER_AREA) for rgb in read_video(path)])


def test_onnxruntime_matches_torch(model, make_video):
    """Both on the CPU, in FP32: on a CUDA machine torch would run cuDNN with TF32 and ONNX Runtime its CUDA
    provider, and 1e-4 would measure TF32's 10-bit products, not the export."""
    from autoencoded.live.engines.ort_backend import OnnxRuntimeEngine
    from autoencoded.live.engines.torch_backend import TorchEngine

    frames = video_frames(make_video)
    with OnnxRuntimeEngine(read_pack(model["pack"]), device="cpu") as ort_engine, \
            TorchEngine(model["ckpt"], device="cpu") as torch_engine:
        assert ort_engine.name.startswith("onnxruntime (CPUExecutionProvider")
        z = 256 + (W // 2) * (H // 2)  # the learned code and the layout (lite: eight times the 16-pixel bottom grid)
        assert (ort_engine.width, ort_engine.height, ort_engine.z_dim) == (W, H, z)
        mu_o, ls_o = ort_engine.encode(frames)
        mu_t, ls_t = torch_engine.encode(frames)
        assert mu_o.dtype == np.float32 and mu_o.shape == (len(frames), z)
        assert np.abs(mu_o - mu_t).max() < 1e-4 and np.abs(ls_o - ls_t).max() < 1e-4
        rec_o, rec_t = ort_engine.reconstruct(frames), torch_engine.reconstruct(frames)
        assert rec_o.dtype == np.uint8 and rec_o.shape == frames.shape
        assert np.abs(rec_o.astype(int) - rec_t.astype(int)).max() <= 1
        dec = ort_engine.decode(mu_o[:1])
        assert np.abs(dec.astype(int) - rec_o[:1].astype(int)).max() <= 1
        assert ort_engine.reconstruct(frames[0]).shape == (1, H, W, 3)  # a single H x W x 3 frame
        with pytest.raises(ValueError):
            ort_engine.encode(np.zeros((1, H + 1, W, 3), np.uint8))


def test_auto_takes_the_fastest_backend_this_machine_has_and_says_why(model):
    from autoencoded.live.engines.ort_backend import cuda_available

    lines: list[str] = []
    with open_engine(model["pack"], "auto", log=lines.append) as engine:
        assert len(lines) == 1 and lines[0].startswith(f"engine: {engine.name} (auto")
        if tensorrt_unavailable() is None:  # an NVIDIA GPU with TensorRT
            assert engine.name.startswith("tensorrt")
        elif cuda_available() and torch.cuda.is_available():
            assert engine.name.startswith(("onnxruntime (CUDAExecutionProvider", "onnxruntime (CPU"))
        else:
            assert engine.name.startswith("onnxruntime (CPUExecutionProvider")
            assert "onnxruntime has no CUDA provider" in lines[0] or "CUDA failed" in lines[0]


def test_explicit_onnxruntime_runs_on_the_cpu_when_the_gpu_cannot(model):
    from autoencoded.live.engines.ort_backend import cuda_available

    lines: list[str] = []
    with open_engine(model["pack"], "onnxruntime", log=lines.append) as engine:
        if engine.name.startswith("onnxruntime (CUDAExecutionProvider"):
            assert lines == []
        elif torch.cuda.is_available() or cuda_available():  # a GPU it could not use: said in one line
            assert len(lines) == 1 and lines[0].startswith("engine: onnxruntime runs on the CPU: ")
        else:  # no GPU at all: nothing to say
            assert lines == [] and engine.name.startswith("onnxruntime (CPUExecutionProvider")


def test_torch_backend_from_pack_source_and_run_folder(model, tmp_path):
    lines: list[str] = []
    with open_engine(model["pack"], "torch", log=lines.append) as e:
        assert e.name.startswith("torch cuda" if torch.cuda.is_available() else "torch cpu")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(model["ckpt"], run / "checkpoints" / model["ckpt"].name)
    with open_engine(run, "auto", log=lines.append) as e:
        assert e.name.startswith("torch")
    assert "is a checkpoint" in lines[-1]
    with pytest.raises(UserError, match="runs a model pack: autoencoded export"):
        open_engine(run, "onnxruntime")
    moved = tmp_path / "pack"
    shutil.copytree(model["pack"], moved)
    meta = json.loads((moved / "model.json").read_text())
    meta["source_checkpoint"] = str(tmp_path / "gone.safetensors")
    (moved / "model.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="source checkpoint .* is not available"):
        open_engine(moved, "torch")


@pytest.mark.skipif(tensorrt_unavailable() is None, reason="TensorRT and a CUDA GPU are present here")
def test_explicit_tensorrt_says_why_in_one_line(model, capsys):
    with pytest.raises(UserError) as err:
        open_engine(model["pack"], "tensorrt")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("the tensorrt backend cannot run: ")
    assert ("tensorrt is not installed (pip install 'autoencoded[gpu]')" in msg) or ("no CUDA GPU" in msg)
    assert main(["bench", "--model", str(model["pack"]), "--backend", "tensorrt", "--seconds", "0.05"]) == 2
    assert capsys.readouterr().err.strip() == f"error: {msg}"


def test_demo_model_absent_or_present(tmp_path):
    from autoencoded.live.assets import DEMO_MODEL_DIR
    if (DEMO_MODEL_DIR / "model.json").is_file():
        with open_engine(None, "onnxruntime") as e:
            assert e.width > 0
    else:
        with pytest.raises(UserError, match="demo model is not installed"):
            open_engine(None)


def test_unknown_backend_and_paths(model, tmp_path):
    with pytest.raises(UserError, match="unknown backend"):
        open_engine(model["pack"], "cuda")
    with pytest.raises(UserError, match="no such model pack"):
        open_engine(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="neither a model pack"):
        open_engine(tmp_path / "empty")


# ---- bad packs: each refused with one line (exit code 2 through the CLI) -----------------------------

def bad_copy(model, tmp_path: Path) -> Path:
    dst = tmp_path / "bad"
    shutil.copytree(model["pack"], dst)
    return dst


def assert_refused(pack: Path, capsys, *fragments: str) -> None:
    with pytest.raises(UserError) as err:
        read_pack(pack)
    msg = str(err.value)
    assert "\n" not in msg, msg
    for f in fragments:
        assert f in msg, msg
    assert main(["bench", "--model", str(pack), "--backend", "onnxruntime", "--seconds", "0.05"]) == 2
    out = capsys.readouterr().err.strip()
    assert out.startswith("error: ") and "\n" not in out


def test_truncated_onnx(model, tmp_path, capsys):
    pack = bad_copy(model, tmp_path)
    data = (pack / "encoder.onnx").read_bytes()
    (pack / "encoder.onnx").write_bytes(data[: len(data) // 3])
    assert_refused(pack, capsys, "encoder.onnx: not a valid ONNX file")


def test_garbage_onnx(model, tmp_path, capsys):
    pack = bad_copy(model, tmp_path)
    (pack / "decoder.onnx").write_bytes(b"\xff\x00garbage, not protobuf" * 50)
    assert_refused(pack, capsys, "decoder.onnx: not a valid ONNX file")


@pytest.mark.parametrize("where", ["parent", "absolute"])
def test_external_data_leaving_the_pack_is_refused(model, tmp_path, capsys, where):
    pack = bad_copy(model, tmp_path)
    enc = onnx.load(str(pack / "encoder.onnx"))
    tensor = max(enc.graph.initializer, key=lambda t: len(t.raw_data))
    outside = tmp_path / "x"
    outside.write_bytes(tensor.raw_data)  # readable if anything followed the path
    location = "../x" if where == "parent" else str(outside)
    external_data_helper.set_external_data(tensor, location=location)
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    (pack / "encoder.onnx").write_bytes(enc.SerializeToString())
    assert_refused(pack, capsys, "leaves the model pack (refused)", repr(location))


def test_file_entry_leaving_the_pack_is_refused(model, tmp_path, capsys):
    pack = bad_copy(model, tmp_path)
    shutil.copy(pack / "encoder.onnx", tmp_path / "enc.onnx")
    meta = json.loads((pack / "model.json").read_text())
    meta["files"]["encoder"] = "../enc.onnx"
    (pack / "model.json").write_text(json.dumps(meta))
    assert_refused(pack, capsys, "leaves the model pack")


def test_missing_model_json(model, tmp_path, capsys):
    pack = bad_copy(model, tmp_path)
    (pack / "model.json").unlink()
    with pytest.raises(UserError, match="no model.json"):
        read_pack(pack)
    assert main(["bench", "--model", str(pack), "--backend", "onnxruntime", "--seconds", "0.05"]) == 2
    assert "neither a model pack (no model.json)" in capsys.readouterr().err


def test_mismatched_model_json(model, tmp_path, capsys):
    pack = bad_copy(model, tmp_path)
    meta = json.loads((pack / "model.json").read_text())
    meta["width"] = W + 16
    (pack / "model.json").write_text(json.dumps(meta))
    assert_refused(pack, capsys, f"model.json says {W + 16}x{H}", f"3x{H}x{W}")


def test_newer_format_version(model, tmp_path, capsys):
    pack = bad_copy(model, tmp_path)
    meta = json.loads((pack / "model.json").read_text())
    meta["format_version"] = 2
    (pack / "model.json").write_text(json.dumps(meta))
    assert_refused(pack, capsys, "format version 2 is newer than this tool")


def test_changed_onnx_fails_model_hash(model, tmp_path, capsys):
    pack = bad_copy(model, tmp_path)
    dec = onnx.load(str(pack / "decoder.onnx"))
    dec.doc_string = "edited"
    (pack / "decoder.onnx").write_bytes(dec.SerializeToString())
    assert_refused(pack, capsys, "do not match model_hash")


def test_pickle_checkpoint_refused_by_open_engine(tmp_path):
    pt = tmp_path / "weights.pth"
    torch.save({"encoder.w": torch.zeros(1)}, pt)
    with pytest.raises(UserError, match="never pickles"):
        open_engine(pt)


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime missing")
def test_threads_leave_one_core_to_the_rest_of_the_loop(model):
    from autoencoded.live.engines.ort_backend import physical_cores
    with open_engine(model["pack"], "onnxruntime") as e:
        assert e.threads == max(1, physical_cores() - 1) >= 1
        assert f"{e.threads} thread" in e.name


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_nan_image_is_a_fault_not_a_grey_frame(model, backend):
    """A NaN latent makes a NaN image: the backend says so before post-processing would turn it grey."""
    from autoencoded.live.engines.base import EngineFault

    with open_engine(model["pack"] if backend == "onnxruntime" else model["ckpt"], backend,
                     log=lambda s: None) as engine:
        good = engine.decode(np.zeros((1, engine.z_dim), np.float32))
        assert good.shape == (1, H, W, 3)
        with pytest.raises(EngineFault, match="NaN"):
            engine.decode(np.full((1, engine.z_dim), np.nan, np.float32))
        with pytest.raises(ValueError, match="latents"):
            engine.decode(np.zeros((1, engine.z_dim + 1), np.float32))
