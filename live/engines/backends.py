"""The inference backends: BACKENDS, the registry that every command's --backend choices, its --help and
the unknown-backend line come from, and `auto`, the choice among the built-in ones.

A backend is one `register_backend` call (here, or in a plugin module: autoencoded.plugins): its name, a
factory that takes one EngineOptions, its help, the pip extra that brings it, and whether it runs training
checkpoints (a backend that does not is refused a checkpoint in one line, saying to export it) and takes
a CPU thread count. `auto` is not an entry: it is the policy "the fastest built-in one that loads here"
(tensorrt on an NVIDIA GPU, then onnxruntime CUDA, then onnxruntime CPU for packs; torch for checkpoints),
saying in one line which it took and why each faster one was passed over.

Heavy or GPU-only imports (tensorrt, onnxruntime, torch, the engine builder) happen only inside the factory
that needs them, so importing this module is cheap (the commands build their options from it).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from autoencoded import plugins
from autoencoded.errors import UserError, one_line
from autoencoded.extras import pip_install
from autoencoded.fileio import sha256_file
from autoencoded.live.engines.base import Engine

AUTO = "auto"


@dataclass(frozen=True)
class EngineOptions:
    """What a backend's factory is given: the model, resolved (resolve_model), and the settings that apply."""

    kind: str  # "pack" (a model pack folder) or "checkpoint" (a .safetensors file or a run folder)
    path: Path
    log: Callable[[str], object] = print
    which: str = "best"  # a run folder's best or latest checkpoint
    max_batch: int = 16  # TensorRT's largest batch
    precision: str = "fp16"  # TensorRT's
    threads: int | None = None  # CPU threads (backends that take them; None: their default)


@dataclass(frozen=True)
class Backend:
    """One inference backend, as --backend NAME names it."""

    name: str
    factory: Callable[[EngineOptions], Engine]
    help: str  # what it runs on, for --help
    extra: str | None = None  # the pip extra that brings its library
    checkpoints: bool = False  # runs training checkpoints (others run model packs only)
    threads: bool = False  # takes a CPU thread count (live and bench --threads)
    origin: str | None = None  # the plugin that registered it (autoencoded.plugins), None for a built-in

    @property
    def install(self) -> str:
        """How to get its library: pip install 'autoencoded[EXTRA]' ('' for one that needs no extra)."""
        return pip_install(self.extra) if self.extra else ""


#: --backend NAME -> its backend, in the order --help and `bench --backend all` take them
BACKENDS: dict[str, Backend] = {}


def register_backend(name: str, factory: Callable[[EngineOptions], Engine], help: str, extra: str | None = None,
                     checkpoints: bool = False, threads: bool = False) -> Backend:
    """Add a backend: `--backend NAME` of live, render, eval and bench then opens factory(EngineOptions)."""
    if name in BACKENDS or name in (AUTO, "all"):
        raise ValueError(f"backend {name!r} is registered already")
    BACKENDS[name] = backend = Backend(name, factory, help, extra, checkpoints, threads, plugins.loading())
    return backend


def backend_choices() -> list[str]:
    """What --backend takes: auto, then every registered backend."""
    return [AUTO, *BACKENDS]


def backend_help() -> str:
    """What each --backend choice is, for --help."""
    about = [f"{AUTO}: the fastest built-in backend that loads here, said in one line"]
    about += [f"{b.name}: {b.help}" + (f" (the {b.extra} extra)" if b.extra else "") for b in BACKENDS.values()]
    return "Inference backend. " + "; ".join(about) + "."


def check_backend(backend: str) -> None:
    """One UserError line for a name that is no backend."""
    if backend != AUTO and backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r} (choose from {', '.join(backend_choices())})")


def open_backend(backend: str, options: EngineOptions) -> Engine:
    """The engine of `backend` (auto or a registered one, see check_backend) for a resolved model."""
    if backend == AUTO:
        return _auto(options)
    entry = BACKENDS[backend]
    if options.kind == "checkpoint" and not entry.checkpoints:
        raise UserError(f"{options.path} is a training checkpoint; the {backend} backend runs a model pack: "
                        f"autoencoded export {options.path} -o MODEL")
    return plugins.made_by(entry.origin, f"backend {backend}", lambda: entry.factory(options), Engine)


# ---------------------------------------------------------------------------------------- the built-ins

def tensorrt_unavailable() -> str | None:
    """Why the TensorRT backend cannot run here, or None when it can."""
    if importlib.util.find_spec("tensorrt") is None:
        return f"tensorrt is not installed ({BACKENDS['tensorrt'].install})"
    import torch
    if not torch.cuda.is_available():
        return "no CUDA GPU (torch.cuda.is_available() is False)"
    return None


def _tensorrt_engine(pack, o: EngineOptions) -> Engine:
    from autoencoded.live.engines.tensorrt_backend import TensorRTEngine
    return TensorRTEngine(pack, precision=o.precision, max_batch=o.max_batch, log=o.log)


def _tensorrt(o: EngineOptions) -> Engine:
    from autoencoded.live.engines.pack import read_pack
    pack = read_pack(o.path)
    reason = tensorrt_unavailable()
    if reason:
        raise UserError(f"the tensorrt backend cannot run: {reason}")
    return _tensorrt_engine(pack, o)


def _onnxruntime(o: EngineOptions) -> Engine:
    """--backend onnxruntime: the CUDA provider when it works; when a GPU is there but unusable, the CPU
    provider, with one line saying why (the user asked for onnxruntime, not for a GPU)."""
    from autoencoded.live.engines.pack import read_pack
    pack = read_pack(o.path)
    import torch

    from autoencoded.live.engines.ort_backend import OnnxRuntimeEngine, cuda_available
    if cuda_available():
        try:
            return OnnxRuntimeEngine(pack, device="cuda")
        except UserError as exc:
            o.log(f"engine: onnxruntime runs on the CPU: its CUDA provider is unusable ({exc})")
    elif torch.cuda.is_available():
        o.log("engine: onnxruntime runs on the CPU: this onnxruntime has no CUDA provider "
              f"(for the GPU: pip uninstall -y onnxruntime && {BACKENDS['tensorrt'].install})")
    return OnnxRuntimeEngine(pack, device="cpu", threads=o.threads)


def _pack_checkpoint(pack_dir: Path) -> Path:
    """The checkpoint a pack was exported from, when it is still there unchanged (for the torch backend)."""
    from autoencoded.live.engines.pack import read_meta
    meta = read_meta(pack_dir)
    src = meta.get("source_checkpoint")
    if src and Path(src).is_file() and sha256_file(Path(src)) == meta.get("source_sha256"):
        return Path(src)
    raise UserError(f"{pack_dir}: the torch backend runs checkpoints, and this pack's source checkpoint "
                    f"{src or '(none recorded)'} is not available unchanged; use onnxruntime or tensorrt")


def _torch(o: EngineOptions) -> Engine:
    from autoencoded.live.engines.torch_backend import TorchEngine
    if o.kind == "checkpoint":
        return TorchEngine(o.path, which=o.which)
    return TorchEngine(_pack_checkpoint(o.path))


register_backend("tensorrt", _tensorrt, "FP16 engines built for this NVIDIA GPU and cached", extra="gpu")
register_backend("onnxruntime", _onnxruntime, "ONNX Runtime on the CPU, or on CUDA from the gpu extra", extra="cpu", threads=True)
register_backend("torch", _torch, "PyTorch on the CPU or CUDA, which runs checkpoints (a pack through the "
                 "checkpoint it was exported from)", checkpoints=True)


def _auto(o: EngineOptions) -> Engine:
    """auto: fastest first, and say why each faster one was passed over."""
    if o.kind == "checkpoint":
        engine = _torch(o)
        o.log(f"engine: {engine.name} ({o.path} is a checkpoint; export it to a model pack for "
              "onnxruntime or tensorrt)")
        return engine
    from autoencoded.live.engines.pack import read_pack
    pack = read_pack(o.path)
    from autoencoded.live.engines.ort_backend import OnnxRuntimeEngine, cuda_available
    why: list[str] = []
    reason = tensorrt_unavailable()
    if reason is None:
        try:
            engine = _tensorrt_engine(pack, o)
            o.log(f"engine: {engine.name} (auto: NVIDIA GPU with TensorRT)")
            return engine
        except Exception as exc:  # fall back loudly, with the reason, never silently
            why.append(f"tensorrt failed: {one_line(exc, typed=True)}")
    else:
        why.append(reason)
    if cuda_available():
        try:
            engine = OnnxRuntimeEngine(pack, device="cuda")
            o.log(f"engine: {engine.name} (auto: {'; '.join(why)})")
            return engine
        except Exception as exc:
            why.append(f"onnxruntime CUDA failed: {one_line(exc)}")
    else:
        why.append("onnxruntime has no CUDA provider")
    engine = OnnxRuntimeEngine(pack, device="cpu", threads=o.threads)
    o.log(f"engine: {engine.name} (auto: {'; '.join(why)})")
    return engine
