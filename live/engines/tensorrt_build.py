"""Build TensorRT engines (10.x and 11.x) from a model pack's ONNX graphs, through the engine cache.

How FP16 is built, on both majors: TensorRT 11 removed weak typing (BuilderFlag.FP16 and the other
precision flags are gone; NVIDIA deprecated them in 10.12), so precision lives in the graph. The FP32 graph
is converted to FP16 with FP32 inputs and outputs by ONNX Runtime's own converter
(onnxruntime.transformers.float16, shipped in both the onnxruntime and onnxruntime-gpu wheels, so the `gpu`
extra needs nothing more), and built as a strongly typed network: TensorRT then runs exactly the types the
graph states. One path for 10 and 11 (10 is asked for strong typing with its creation flag; on 11 every
network is strongly typed, and the flag, still defined, is ignored: NvInfer.h of 11.1), so an "fp16" engine is FP16 by construction, and `fp16_share` proves it on
its outputs: the graph ends in an FP16 tanh cast to FP32, so every output value of a real FP16 engine is
an FP16 number, while FP32 arithmetic hits one about once in 8192.

Every engine has two optimisation profiles: 0 is batch 1 exactly (the live path, replayed as a CUDA
graph on an execution context of its own), 1 is batch 1..max_batch (render, parity, bench) tuned for
max_batch: TensorRT picks each layer's kernels for the profile's opt shape, and profile 1 never runs batch 1.

TensorRT 10.12 or later: the flag exists from 10.0, but 10.12 is where NVIDIA deprecated weak typing and made
strong typing the way to build (its release notes), and the 10.x this builder was read against is 10.16.

tensorrt and torch.cuda are imported inside the functions that need them: this module loads on any
machine, and the key and recipe logic (which needs no GPU) is tested everywhere.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from autoencoded.errors import UserError
from autoencoded.live.engines.cache import EngineCache, EngineKey

PRECISIONS = ("fp16", "fp32")
WORKSPACE_BYTES = 2 << 30
SUPPORTED_MAJORS = (10, 11)
MIN_VERSION = (10, 12)
PIP_SPEC = "tensorrt>=10.12,<12"  # pyproject's gpu extra
#: part of every cache key: bump it when the way engines are built changes, so old engines are rebuilt
#: 2: strongly typed networks from an FP16 graph (FP32 I/O), TF32 off in FP32 builds, a batch-1 profile
BUILDER_VERSION = "2"
#: an FP16 engine's outputs are FP16 numbers; FP32 arithmetic makes one about once in 8192
FP16_SHARE_MIN = 0.99


@dataclass(frozen=True)
class Recipe:
    """How this TensorRT version builds a given precision."""

    major: int
    strongly_typed_flag: bool  # pass NetworkDefinitionCreationFlag.STRONGLY_TYPED to create_network
    fp16_graph: bool  # build from the FP16 conversion of the graph (else the FP32 graph as exported)
    clear_tf32: bool  # FP32 means FP32: no TF32 tensor-core shortcuts in FP32 builds


def recipe(trt_version: str, precision: str, has_strongly_typed_flag: bool) -> Recipe:
    """The build for `precision` under TensorRT `trt_version` (e.g. "10.16.1.11", "11.4.0.106").

    `has_strongly_typed_flag`: whether tensorrt.NetworkDefinitionCreationFlag still defines STRONGLY_TYPED
    (every 10.x does and needs it to build strongly typed; 11.x ignores it and may drop it)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    try:
        major, minor = (int(p) for p in (str(trt_version).split(".") + ["0"])[:2])
    except ValueError:
        raise UserError(f"TensorRT version {trt_version!r} is not understood") from None
    if major not in SUPPORTED_MAJORS or (major, minor) < MIN_VERSION:
        raise UserError(f"TensorRT {trt_version} is not supported (this tool builds with TensorRT "
                        f"{'.'.join(map(str, MIN_VERSION))} to {SUPPORTED_MAJORS[-1]}.x): pip install '{PIP_SPEC}'")
    return Recipe(major=major, strongly_typed_flag=has_strongly_typed_flag, fp16_graph=precision == "fp16",
                  clear_tf32=precision == "fp32")


def device_identity(device: int = 0) -> dict[str, str]:
    """TensorRT version, GPU name and compute capability of the GPU that will run the engine."""
    import tensorrt as trt
    import torch
    major, minor = torch.cuda.get_device_capability(device)
    return {"trt_version": str(trt.__version__), "gpu_name": torch.cuda.get_device_name(device),
            "compute_capability": f"{major}.{minor}"}


Profile = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]


def batch_profiles(name: str, item: tuple[int, ...], max_batch: int) -> list[Profile]:
    """Profile 0: batch 1 exactly (the CUDA-graph path); profile 1: batch 1..max_batch, tuned for max_batch
    (batch 1 never runs on it)."""
    one, most = (1, *item), (max_batch, *item)
    return [{name: (one, one, one)}, {name: (one, most, most)}]


def shape_spec(profiles: list[Profile]) -> str:
    """[{"image": (min, opt, max)}, ...] -> "image:1x3x144x256/1x3x144x256/1x3x144x256|image:..." (stable)."""
    return "|".join(";".join(f"{name}:" + "/".join("x".join(map(str, s)) for s in mm)
                             for name, mm in sorted(p.items())) for p in profiles)


def make_key(model_hash: str, part: str, precision: str, profiles: list[Profile],
             identity: dict[str, str]) -> EngineKey:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    return EngineKey(model_hash=model_hash, part=part, precision=precision, shape=shape_spec(profiles),
                     trt_version=identity["trt_version"], gpu_name=identity["gpu_name"],
                     compute_capability=identity["compute_capability"], builder=BUILDER_VERSION)


def fp16_onnx(onnx_bytes: bytes) -> bytes:
    """The FP16 form of an FP32 graph, inputs and outputs left FP32 (casts inserted at the edges)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load_from_string(onnx_bytes), keep_io_types=True)
    return model.SerializeToString()


def fp16_share(values) -> float:
    """Share of `values` that are exactly FP16 numbers (see the module doc): ~1.0 from a real FP16
    engine, ~0.0001 from FP32 arithmetic."""
    v = np.asarray(values, np.float32).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 0.0
    return float(np.mean(v.astype(np.float16).astype(np.float32) == v))


def _tensor_precision(tensor: dict) -> str | None:
    # TensorRT 10 writes "Format/Datatype": "Row major linear FP16 format"; 11 splits it into "Format" and
    # "DataType": "Half" (the IEngineInspector JSON migration guide)
    text = " ".join(str(tensor.get(k, "")) for k in ("DataType", "Format/Datatype", "Format")).lower()
    if "half" in text or "fp16" in text:
        return "fp16"
    if "float" in text or "fp32" in text:
        return "fp32"
    return None


def layer_precisions(info_json: str) -> dict[str, int]:
    """IEngineInspector's engine information (JSON, DETAILED verbosity, TensorRT 10 or 11 schema) ->
    how many layers compute in FP16, in FP32, or in neither (reformats, shape layers, unknown)."""
    try:
        layers = json.loads(info_json).get("Layers", [])
    except (ValueError, AttributeError):
        return {}
    counts: Counter = Counter()
    for layer in layers:
        if not isinstance(layer, dict) or layer.get("LayerType") in ("Reformat", "Shuffle", "NoOp", "Constant"):
            counts["other"] += 1
            continue
        kinds = {_tensor_precision(t) for t in (*layer.get("Inputs", ()), *layer.get("Outputs", ()))
                 if isinstance(t, dict)}
        counts["fp16" if "fp16" in kinds else "fp32" if "fp32" in kinds else "other"] += 1
    return dict(counts)


def build_serialized(onnx_bytes: bytes, precision: str, profiles: list[Profile], logger=None) -> bytes:
    """Parse the pack's FP32 ONNX bytes and build a serialized engine by this TensorRT's `recipe`."""
    import tensorrt as trt

    r = recipe(trt.__version__, precision, hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"))
    logger = logger or trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if r.strongly_typed_flag else 0
    network = builder.create_network(flags)  # explicit batch is the only mode since 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(fp16_onnx(onnx_bytes) if r.fp16_graph else onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse the ONNX graph: {errors[:300]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # the inspector can then tell layer types
    if r.clear_tf32:
        config.clear_flag(trt.BuilderFlag.TF32)
    for shapes in profiles:
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in shapes.items():
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build the {precision} engine (see its log above)")
    return bytes(serialized)


def cached_engine(cache: EngineCache, key: EngineKey, onnx_bytes: bytes, profiles: list[Profile],
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
