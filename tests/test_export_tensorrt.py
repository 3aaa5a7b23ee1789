"""TensorRT engine cache (CPU-testable: keys, header validation, rebuild) and, on a GPU, real engines."""

from __future__ import annotations

import dataclasses
import importlib.util

import numpy as np
import pytest

from autoencoded.live.engines import tensorrt_unavailable
from autoencoded.live.engines.cache import MAGIC, EngineCache, EngineKey, cache_dir, decode_file
from autoencoded.live.engines.tensorrt_build import cached_engine, make_key, shape_spec

IDENTITY = {"trt_version": "10.9.0", "gpu_name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
PROFILES = {"image": ((1, 3, 144, 256), (1, 3, 144, 256), (16, 3, 144, 256))}


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
    assert shape_spec(PROFILES) == "image:1x3x144x256/1x3x144x256/16x3x144x256"
    variants = [key(model_hash="cd" * 32), key(part="encoder"), key(trt_version="10.10.0"),
                key(gpu_name="NVIDIA GeForce RTX 4090"), key(compute_capability="8.9"), key(precision="fp32"),
                key(shape=shape_spec({"image": ((1, 3, 144, 256),) * 2 + ((32, 3, 144, 256),)}))]
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
        assert trt_engine.parity["ok"] and trt_engine.parity["psnr_db"] >= 40
        assert any("building" in line for line in logs)
        rec = trt_engine.reconstruct(frames)
        mu, _ = trt_engine.encode(frames[:1])
        assert np.isfinite(mu).all() and rec.shape == frames.shape
        with open_engine(pack.path, "onnxruntime") as ref:
            assert np.abs(ref.reconstruct(frames).astype(int) - rec.astype(int)).mean() < 2.0
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
