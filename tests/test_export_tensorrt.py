"""TensorRT: the engine cache (keys, header validation, rebuild), the build recipe of TensorRT 10 and 11,
the FP16 graph and the proof that an engine computes in FP16 (CPU-testable, with real ONNX Runtime sessions),
and, on a GPU, real engines."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from autoencoded.live.engines import tensorrt_unavailable
from autoencoded.live.engines.cache import MAGIC, EngineCache, EngineKey, cache_dir, decode_file
from autoencoded.live.engines.tensorrt_build import (
    BUILDER_VERSION,
    batch_profiles,
    cached_engine,
    fp16_onnx,
    fp16_share,
    layer_precisions,
    make_key,
    recipe,
    shape_spec,
)

REPO = Path(__file__).resolve().parents[1]
IDENTITY = {"trt_version": "10.16.1.11", "gpu_name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
PROFILES = batch_profiles("image", (3, 144, 256), 16)


def key(**changes) -> EngineKey:
    k = make_key("ab" * 32, "fused", "fp16", PROFILES, IDENTITY)
    return dataclasses.replace(k, **changes)


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("AUTOENCODED_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c" / "engines"
    monkeypatch.delenv("AUTOENCODED_CACHE")
    assert cache_dir().parts[-3:] == (".cache", "autoencoded", "engines")


def test_every_key_field_changes_the_file():
    base = key()
    assert shape_spec(PROFILES) == ("image:1x3x144x256/1x3x144x256/1x3x144x256|"
                                    "image:1x3x144x256/16x3x144x256/16x3x144x256")  # tuned for the largest
    assert base.builder == BUILDER_VERSION  # how engines are built is part of the key
    variants = [key(model_hash="cd" * 32), key(part="encoder"), key(trt_version="11.4.0.106"),
                key(gpu_name="NVIDIA GeForce RTX 4090"), key(compute_capability="8.9"), key(precision="fp32"),
                key(shape=shape_spec(batch_profiles("image", (3, 144, 256), 32))), key(builder="1")]
    names = {base.filename()} | {v.filename() for v in variants}
    assert len(names) == 1 + len(variants)
    assert base.filename() == key().filename()  # stable
    with pytest.raises(ValueError):
        make_key("x", "fused", "int8", PROFILES, IDENTITY)


def test_store_load_and_reject_corrupt_or_stale(tmp_path):
    cache = EngineCache(tmp_path)
    k = key()
    assert cache.load(k)[:2] == (None, "not cached")
    payload = bytes(range(256)) * 40
    path = cache.store(k, payload, {"parity": {"psnr_db": 55.0}})
    assert path.parent == tmp_path and path.read_bytes().startswith(MAGIC)
    got, why, extra = cache.load(k)
    assert got == payload and why == "ok" and extra["parity"]["psnr_db"] == 55.0
    data = path.read_bytes()
    # a flipped byte in the engine
    path.write_bytes(data[:-10] + bytes([data[-10] ^ 0xFF]) + data[-9:])
    assert cache.load(k)[:2] == (None, "corrupt engine (size or sha256 mismatch)")
    # truncated
    path.write_bytes(data[: len(data) // 2])
    assert cache.load(k)[0] is None
    path.write_bytes(data[:12])
    assert cache.load(k)[1] == "corrupt header (truncated)"
    # garbage (e.g. a raw engine from another tool)
    path.write_bytes(b"ftrt" + payload)
    assert cache.load(k)[1] == "not an engine cache file (bad magic)"
    # built by an older builder (e.g. weakly typed TensorRT 10 engines): rebuilt, never loaded
    old = key(builder="1")
    EngineCache(tmp_path / "old").store(old, payload)
    path.write_bytes(EngineCache(tmp_path / "old").path(old).read_bytes())
    assert cache.load(k)[1].startswith("built for a different")
    # a valid file built for another GPU, copied under this key's name
    other = key(gpu_name="NVIDIA A100-SXM4-80GB")
    cache_other = EngineCache(tmp_path / "o")
    cache_other.store(other, payload)
    path.write_bytes(cache_other.path(other).read_bytes())
    assert cache.load(k)[1].startswith("built for a different")
    assert decode_file(cache_other.path(other).read_bytes(), other)[1] == "ok"


def test_cached_engine_builds_once_and_rebuilds_corrupt(tmp_path):
    # the builder is the GPU boundary: on this CPU a stand-in returns bytes as TensorRT would
    builds: list[str] = []

    def build(onnx_bytes, precision, profiles, logger):
        builds.append(precision)
        return b"engine:" + onnx_bytes + precision.encode()

    cache, k, logs = EngineCache(tmp_path), key(), []
    data, _, built = cached_engine(cache, k, b"graph", PROFILES, logs.append, build=build)
    assert built and data == b"engine:graphfp16" and builds == ["fp16"] and "not cached" in logs[0]
    data2, _, built2 = cached_engine(cache, k, b"graph", PROFILES, logs.append, build=build)
    assert not built2 and data2 == data and builds == ["fp16"]
    raw = cache.path(k).read_bytes()
    cache.path(k).write_bytes(raw[:-1])
    _, _, built3 = cached_engine(cache, k, b"graph", PROFILES, logs.append, build=build)
    assert built3 and builds == ["fp16", "fp16"] and "corrupt" in logs[-1]
    assert cache.load(k)[1] == "ok"


GPU_REASON = tensorrt_unavailable() or ""


@pytest.mark.gpu
@pytest.mark.skipif(bool(GPU_REASON), reason=f"TensorRT GPU test needs TensorRT and CUDA: {GPU_REASON}")
def test_tensorrt_fp16_engine_on_gpu(tmp_path, monkeypatch):
    from autoencoded.export.onnx_export import random_pack
    from autoencoded.live.engines import open_engine
    from autoencoded.live.engines.parity import synthetic_frames
    from autoencoded.live.engines.tensorrt_backend import TensorRTEngine

    monkeypatch.setenv("AUTOENCODED_CACHE", str(tmp_path / "cache"))
    pack = random_pack("lite", tmp_path / "pack", width=256, height=144)
    frames = synthetic_frames(8, 256, 144)
    logs: list[str] = []
    with TensorRTEngine(pack, max_batch=8, log=logs.append, parity_frames=frames) as trt_engine:
        p = trt_engine.parity
        assert p["ok"] and p["psnr_db"] >= 40 and trt_engine.precision == "fp16"
        assert p["fp16_share"] >= 0.99 > 0.01 > p["fp32_fp16_share"]  # FP16 for real, not FP32 named fp16
        assert any("building" in line for line in logs) and any("FP16 check" in line for line in logs)
        assert "CUDA graphs" in trt_engine.name, [r.graph_error for r in trt_engine.runners.values()]
        rec = trt_engine.reconstruct(frames)
        mu, _ = trt_engine.encode(frames[:1])
        assert np.isfinite(mu).all() and rec.shape == frames.shape
        with open_engine(pack.path, "onnxruntime") as ref:
            expected = ref.reconstruct(frames)
            assert np.abs(expected.astype(int) - rec.astype(int)).mean() < 2.0
            for n in (8, 1, 3, 1):  # the graph context at 1, the dynamic profile otherwise, back and forth
                got = trt_engine.reconstruct(frames[:n])
                assert np.abs(expected[:n].astype(int) - got.astype(int)).mean() < 2.0, n
    logs.clear()
    with TensorRTEngine(pack, max_batch=8, log=logs.append) as again:  # from the cache: no build
        assert not any("building" in line for line in logs)
        assert again.reconstruct(frames[:1]).shape == (1, 144, 256, 3)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_tensorrt_build_module_imports_without_tensorrt():
    # the key logic loads everywhere; only building needs the GPU library
    with pytest.raises(ImportError):
        from autoencoded.live.engines.tensorrt_build import device_identity
        device_identity()


# ---- the build recipe of TensorRT 10 and 11 ---------------------------------------------------------

def test_fp16_is_a_strongly_typed_fp16_graph_on_tensorrt_10_and_11():
    """TensorRT 11 removed BuilderFlag.FP16 (weak typing): both majors build an FP16 graph, strongly typed.
    10 must be asked with NetworkDefinitionCreationFlag.STRONGLY_TYPED (in the 10.16.1 bindings); 11
    accepts the flag (in the 11.4.0 bindings) and is strongly typed whether or not a later 11.x keeps it."""
    ten = recipe("10.16.1.11", "fp16", has_strongly_typed_flag=True)
    assert (ten.major, ten.strongly_typed_flag, ten.fp16_graph, ten.clear_tf32) == (10, True, True, False)
    eleven = recipe("11.4.0.106", "fp16", has_strongly_typed_flag=True)
    assert (eleven.major, eleven.strongly_typed_flag, eleven.fp16_graph) == (11, True, True)
    later = recipe("11.9.0", "fp16", has_strongly_typed_flag=False)
    assert (later.strongly_typed_flag, later.fp16_graph) == (False, True)
    fp32 = recipe("11.4.0.106", "fp32", has_strongly_typed_flag=True)
    assert (fp32.fp16_graph, fp32.clear_tf32) == (False, True)  # the FP32 reference is FP32, not TF32


@pytest.mark.parametrize("version", ["8.6.1", "9.3.0", "12.0.0", "x.y"])
def test_unsupported_tensorrt_majors_are_one_line(version):
    from autoencoded.errors import UserError
    with pytest.raises(UserError) as err:
        recipe(version, "fp16", has_strongly_typed_flag=True)
    assert "\n" not in str(err.value) and version in str(err.value)


def test_tensorrt_before_10_12_is_refused_with_the_install_line():
    """Every 10.x defines STRONGLY_TYPED (NvInfer.h from v10.0.0), so the floor is the version NVIDIA made strong
    typing the way to build (10.12 deprecated weak typing), and pyproject's gpu extra asks for it."""
    from autoencoded.errors import UserError
    from autoencoded.live.engines.tensorrt_build import PIP_SPEC
    with pytest.raises(UserError) as err:
        recipe("10.11.0.33", "fp16", has_strongly_typed_flag=True)
    assert "10.11.0.33" in str(err.value) and PIP_SPEC in str(err.value)
    assert recipe("10.12.0.36", "fp16", has_strongly_typed_flag=True).strongly_typed_flag
    gpu_extra = next(line for line in (REPO / "pyproject.toml").read_text().splitlines() if line.startswith("gpu = "))
    assert f'"{PIP_SPEC}"' in gpu_extra


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None, reason="the tensorrt package is not installed")
def test_recipe_of_the_installed_tensorrt():
    import tensorrt as trt
    r = recipe(trt.__version__, "fp16", hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"))
    assert r.fp16_graph and r.major in (10, 11)
    if r.major == 11:
        assert not hasattr(trt.BuilderFlag, "FP16")  # why the weakly typed build had to go


# ---- the FP16 graph and the proof of FP16 ------------------------------------------------------------

@pytest.fixture(scope="module")
def lite_pack(tmp_path_factory):
    from autoencoded.export.onnx_export import random_pack
    return random_pack("lite", tmp_path_factory.mktemp("trt") / "pack", width=64, height=48)


def test_fp16_graph_keeps_fp32_io_and_runs_close_to_fp32(lite_pack):
    import onnx
    import onnxruntime as ort

    from autoencoded.live.engines.frames import to_model_input
    from autoencoded.live.engines.pack import FUSED_IN, FUSED_OUT
    from autoencoded.live.engines.parity import compare, synthetic_frames

    fp32 = lite_pack.fused().SerializeToString()
    half = onnx.load_from_string(fp16_onnx(fp32))
    assert [i.type.tensor_type.elem_type for i in half.graph.input] == [onnx.TensorProto.FLOAT]
    assert [o.type.tensor_type.elem_type for o in half.graph.output] == [onnx.TensorProto.FLOAT]
    weights = [t for t in half.graph.initializer if len(t.dims) > 1]
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)
    # casts at the edges: the FP32 input becomes FP16 first thing, the FP16 image becomes FP32 last thing
    first = next(n for n in half.graph.node if FUSED_IN in n.input)
    last = next(n for n in half.graph.node if FUSED_OUT in n.output)
    to = {n.name: next(a.i for a in n.attribute if a.name == "to") for n in (first, last)}
    assert (first.op_type, last.op_type) == ("Cast", "Cast")
    assert (to[first.name], to[last.name]) == (onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT)
    x = to_model_input(synthetic_frames(4, 64, 48))
    run = {name: ort.InferenceSession(m, providers=["CPUExecutionProvider"]).run([FUSED_OUT], {FUSED_IN: x})[0]
           for name, m in (("fp32", fp32), ("fp16", half.SerializeToString()))}
    r = compare(run["fp32"], run["fp16"])
    assert r["finite"] and 40 < r["psnr_db"] < 150  # FP16 weights: close, but not the FP32 model


def test_fp16_share_tells_fp16_outputs_from_fp32_ones(lite_pack):
    import onnxruntime as ort

    from autoencoded.live.engines.frames import to_model_input
    from autoencoded.live.engines.pack import FUSED_IN, FUSED_OUT
    from autoencoded.live.engines.parity import synthetic_frames

    session = ort.InferenceSession(lite_pack.fused().SerializeToString(), providers=["CPUExecutionProvider"])
    y = session.run([FUSED_OUT], {FUSED_IN: to_model_input(synthetic_frames(4, 64, 48))})[0]
    assert fp16_share(y) < 0.01  # FP32 arithmetic: about 1 in 8192 values happen to be FP16 numbers
    # what an FP16 engine's final cast to FP32 outputs: every value an FP16 number
    assert fp16_share(y.astype(np.float16).astype(np.float32)) == 1.0
    assert fp16_share(np.array([np.nan, np.inf])) == 0.0


TRT10_INSPECTOR = """{"Layers": [
 {"Name": "Reformatting CopyNode for Input Tensor 0", "LayerType": "Reformat",
  "Inputs": [{"Name": "enc/image", "Format/Datatype": "Row major linear FP32 format"}],
  "Outputs": [{"Name": "x", "Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}]},
 {"Name": "enc/conv2d + enc/leaky_relu", "LayerType": "CaskConvolution",
  "Inputs": [{"Name": "x", "Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}],
  "Outputs": [{"Name": "y", "Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}]},
 {"Name": "dec/gemm", "LayerType": "CaskGemmConvolution",
  "Inputs": [{"Name": "y", "Format/Datatype": "Row major linear FP32 format"}],
  "Outputs": [{"Name": "z", "Format/Datatype": "Row major linear FP32 format"}]}],
 "Bindings": ["enc/image", "dec/image"]}"""

TRT11_INSPECTOR = """{"Layers": [
 {"Name": "enc/conv2d + enc/leaky_relu", "LayerType": "CaskConvolution",
  "Inputs": [{"Name": "x", "DataType": "Half", "Format": "Channel major format where channel % 8 == 0"}],
  "Outputs": [{"Name": "y", "DataType": "Half", "Format": "Channel major format where channel % 8 == 0"}]},
 {"Name": "dec/tanh", "LayerType": "PointWiseV2",
  "Inputs": [{"Name": "y", "DataType": "Half", "Format": "Row major linear format"}],
  "Outputs": [{"Name": "z", "DataType": "Float", "Format": "Row major linear format"}]}],
 "I/O Tensors": [{"Name": "enc/image", "IOMode": "Input", "DataType": "Float"}]}"""


def test_inspector_precisions_in_the_tensorrt_10_and_11_schemas():
    assert layer_precisions(TRT10_INSPECTOR) == {"other": 1, "fp16": 1, "fp32": 1}
    assert layer_precisions(TRT11_INSPECTOR) == {"fp16": 2}
    assert layer_precisions("not json") == {}
