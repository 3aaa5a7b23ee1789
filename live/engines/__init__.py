"""Open an inference engine for a model: `open_engine(model, backend)`.

`model` is a model pack folder (model.json + ONNX), a .safetensors checkpoint, a run folder (with
checkpoints/), or None or "demo" for the bundled demo pack (a folder named demo is ./demo). `backend` is one of BACKENDS; "auto" picks the
fastest that loads here (tensorrt on an NVIDIA GPU, then onnxruntime CUDA, then onnxruntime CPU for
packs; torch for checkpoints) and logs one line saying which and why. An explicit backend that cannot
load raises one UserError line saying why, never a silent substitute.

Heavy or GPU-only imports (tensorrt, the engine builder) happen only inside the backend that needs them.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

from autoencoded.errors import UserError, one_line
from autoencoded.live.engines.base import Engine
from autoencoded.live.engines.pack import is_pack, read_pack
from autoencoded.training.weights import sha256_file

BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch")
GPU_HINT = "pip install 'autoencoded[gpu]'"

__all__ = ["BACKENDS", "DEMO", "Engine", "model_name", "open_engine", "resolve_model", "tensorrt_unavailable"]
#: the bundled demo model's name, wherever a model is named: --model demo, OSC /model demo, the web remote's
#: picker (it is also how a show swaps back to it); a folder of that name is ./demo
DEMO = "demo"


def model_name(model: str | Path | None) -> str:
    """What `model` is called in messages ("now playing ..."): "demo" for the bundled model, else the path
    as given."""
    return DEMO if model is None or str(model) == DEMO else str(model)


def resolve_model(model: str | Path | None) -> tuple[str, Path]:
    """-> ("pack", folder) or ("checkpoint", path); None or "demo" is the bundled demo pack. Bad paths raise
    UserError."""
    if model_name(model) == DEMO:
        from autoencoded.live.assets import DEMO_MODEL_DIR
        if not is_pack(DEMO_MODEL_DIR):
            raise UserError(f"the bundled demo model is not installed (expected a model pack at {DEMO_MODEL_DIR}); "
                            "pass --model MODEL")
        return "pack", DEMO_MODEL_DIR
    p = Path(model).expanduser()
    if not p.exists():
        raise UserError(f"{p}: no such model pack, checkpoint or run folder")
    if p.is_dir():
        if is_pack(p):
            return "pack", p
        if (p / "checkpoints").is_dir() or any(p.glob("step-*.safetensors")):
            return "checkpoint", p
        raise UserError(f"{p}: neither a model pack (no model.json) nor a run folder (no checkpoints/)")
    if p.name == "model.json":
        return "pack", p.parent
    return "checkpoint", p  # load_weights refuses anything that is not safetensors, without unpickling


def tensorrt_unavailable() -> str | None:
    """Why the TensorRT backend cannot run here, or None when it can."""
    if importlib.util.find_spec("tensorrt") is None:
        return f"tensorrt is not installed ({GPU_HINT})"
    import torch
    if not torch.cuda.is_available():
        return "no CUDA GPU (torch.cuda.is_available() is False)"
    return None


def _pack_checkpoint(pack_dir: Path) -> Path:
    """The checkpoint a pack was exported from, when it is still there unchanged (for the torch backend)."""
    from autoencoded.live.engines.pack import read_meta
    meta = read_meta(pack_dir)
    src = meta.get("source_checkpoint")
    if src and Path(src).is_file() and sha256_file(Path(src)) == meta.get("source_sha256"):
        return Path(src)
    raise UserError(f"{pack_dir}: the torch backend runs checkpoints, and this pack's source checkpoint "
                    f"{src or '(none recorded)'} is not available unchanged; use onnxruntime or tensorrt")


def open_engine(model: str | Path | None = None, backend: str = "auto", log: Callable[[str], object] = print,
                *, which: str = "best", max_batch: int = 16, precision: str = "fp16",
                threads: int | None = None, memory: bool = False) -> Engine:
    """Open `model` with `backend` (see module doc). `which` picks best/latest checkpoint of a run;
    `max_batch` and `precision` apply to TensorRT; `threads` to onnxruntime on the CPU (default: every
    physical core but one, see ort_backend.cpu_threads). `memory`: also load the pack's memory bank into
    `engine.memory` (live and render), saying in one line what it holds, or why there is none."""
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")
    kind, path = resolve_model(model)
    engine = _open(kind, path, backend, log, which, max_batch, precision, threads)
    if memory:
        engine.memory = _memory(kind, path, engine, log)
    return engine


def _memory(kind: str, path: Path, engine: Engine, log: Callable[[str], object]):
    """The pack's memory bank, or None with one line saying why (the model plays on; /memory does nothing)."""
    from autoencoded.live.engines.memory_bank import read_bank
    from autoencoded.live.engines.pack import read_meta
    from autoencoded.text import printable

    def say(line: str) -> None:  # a path can come from the network (/model)
        log(printable(f"memory: {line}", limit=600))

    off = "/memory does nothing"
    if kind == "checkpoint":
        say(f"{path} is a checkpoint, which has no memory bank (export it to a model pack); {off}")
        return None
    try:
        bank = read_bank(path, read_meta(path), engine.z_dim)
    except UserError as exc:
        say(f"{exc}; {off}")
        return None
    if bank is None:
        say(f"{path} has no memory bank (made before banks, or exported without its dataset); {off} "
            f"(add one: autoencoded memory {path} FOOTAGE)")
    else:
        say(bank.describe())
    return bank


def _open(kind: str, path: Path, backend: str, log: Callable[[str], object], which: str, max_batch: int,
          precision: str, threads: int | None) -> Engine:
    if kind == "checkpoint":
        if backend in ("tensorrt", "onnxruntime"):
            raise UserError(f"{path} is a training checkpoint; the {backend} backend runs a model pack: "
                            f"autoencoded export {path} -o MODEL")
        from autoencoded.live.engines.torch_backend import TorchEngine
        engine = TorchEngine(path, which=which)
        if backend == "auto":
            log(f"engine: {engine.name} ({path} is a checkpoint; export it to a model pack for "
                "onnxruntime or tensorrt)")
        return engine

    if backend == "torch":
        from autoencoded.live.engines.torch_backend import TorchEngine
        return TorchEngine(_pack_checkpoint(path))

    pack = read_pack(path)
    if backend == "tensorrt":
        reason = tensorrt_unavailable()
        if reason:
            raise UserError(f"the tensorrt backend cannot run: {reason}")
        from autoencoded.live.engines.tensorrt_backend import TensorRTEngine
        return TensorRTEngine(pack, precision=precision, max_batch=max_batch, log=log)

    from autoencoded.live.engines.ort_backend import OnnxRuntimeEngine, cuda_available
    if backend == "onnxruntime":
        return _onnxruntime(pack, log, threads)

    # auto: fastest first, and say why each faster one was passed over
    why: list[str] = []
    reason = tensorrt_unavailable()
    if reason is None:
        try:
            from autoencoded.live.engines.tensorrt_backend import TensorRTEngine
            engine: Engine = TensorRTEngine(pack, precision=precision, max_batch=max_batch, log=log)
            log(f"engine: {engine.name} (auto: NVIDIA GPU with TensorRT)")
            return engine
        except Exception as exc:  # fall back loudly, with the reason, never silently
            why.append(f"tensorrt failed: {one_line(exc, typed=True)}")
    else:
        why.append(reason)
    if cuda_available():
        try:
            engine = OnnxRuntimeEngine(pack, device="cuda")
            log(f"engine: {engine.name} (auto: {'; '.join(why)})")
            return engine
        except Exception as exc:
            why.append(f"onnxruntime CUDA failed: {one_line(exc)}")
    else:
        why.append("onnxruntime has no CUDA provider")
    engine = OnnxRuntimeEngine(pack, device="cpu", threads=threads)
    log(f"engine: {engine.name} (auto: {'; '.join(why)})")
    return engine


def _onnxruntime(pack, log: Callable[[str], object], threads: int | None) -> Engine:
    """--backend onnxruntime: the CUDA provider when it works; when a GPU is there but unusable, the CPU
    provider, with one line saying why (the user asked for onnxruntime, not for a GPU)."""
    import torch

    from autoencoded.live.engines.ort_backend import OnnxRuntimeEngine, cuda_available
    if cuda_available():
        try:
            return OnnxRuntimeEngine(pack, device="cuda")
        except UserError as exc:
            log(f"engine: onnxruntime runs on the CPU: its CUDA provider is unusable ({exc})")
    elif torch.cuda.is_available():
        log("engine: onnxruntime runs on the CPU: this onnxruntime has no CUDA provider "
            f"(for the GPU: pip uninstall -y onnxruntime && {GPU_HINT})")
    return OnnxRuntimeEngine(pack, device="cpu", threads=threads)
