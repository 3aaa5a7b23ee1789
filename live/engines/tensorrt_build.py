"""Build TensorRT engines from a model pack's ONNX graphs (TensorRT 10), through the engine cache.

tensorrt and torch.cuda are imported inside the functions that need them: this module loads on any
machine, and the key logic (which needs no GPU) is tested everywhere.
"""

from __future__ import annotations

from collections.abc import Callable

from autoencoded.live.engines.cache import EngineCache, EngineKey

PRECISIONS = ("fp16", "fp32")
WORKSPACE_BYTES = 2 << 30


def device_identity(device: int = 0) -> dict[str, str]:
    """TensorRT version, GPU name and compute capability of the GPU that will run the engine."""
    import tensorrt as trt
    import torch
    major, minor = torch.cuda.get_device_capability(device)
    return {"trt_version": str(trt.__version__), "gpu_name": torch.cuda.get_device_name(device),
            "compute_capability": f"{major}.{minor}"}


def shape_spec(profiles: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]) -> str:
    """{"image": (min, opt, max) shapes} -> "image:1x3x144x256/1x3x144x256/16x3x144x256" (stable order)."""
    return ";".join(f"{name}:" + "/".join("x".join(map(str, s)) for s in mm) for name, mm in sorted(profiles.items()))


def make_key(model_hash: str, part: str, precision: str, profiles: dict, identity: dict[str, str]) -> EngineKey:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    return EngineKey(model_hash=model_hash, part=part, precision=precision, shape=shape_spec(profiles),
                     trt_version=identity["trt_version"], gpu_name=identity["gpu_name"],
                     compute_capability=identity["compute_capability"])


def build_serialized(onnx_bytes: bytes, precision: str, profiles: dict, logger=None) -> bytes:
    """Parse ONNX bytes and build a serialized engine with one optimisation profile."""
    import tensorrt as trt
    logger = logger or trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse the ONNX graph: {errors[:300]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profiles.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build the {precision} engine (see its log above)")
    return bytes(serialized)


def cached_engine(cache: EngineCache, key: EngineKey, onnx_bytes: bytes, profiles: dict,
                  log: Callable[[str], object] = print, logger=None,
                  build: Callable[..., bytes] | None = None) -> tuple[bytes, dict, bool]:
    """-> (engine bytes, header extra, built now?). A missing, stale or corrupt cache file is rebuilt.

    `build(onnx_bytes, precision, profiles, logger)` defaults to build_serialized (TensorRT on the GPU)."""
    payload, why, extra = cache.load(key)
    if payload is not None:
        return payload, extra, False
    log(f"tensorrt: building {key.precision} {key.part} engine for {key.gpu_name} ({why}); "
        "this takes a minute once per GPU")
    payload = (build or build_serialized)(onnx_bytes, key.precision, profiles, logger)
    cache.store(key, payload)
    return payload, {}, True
