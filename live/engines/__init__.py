"""Open an inference engine for a model: `open_engine(model, backend)`.

`model` is a model pack folder (model.json + ONNX), a .safetensors checkpoint, a run folder (with
checkpoints/), or None or "demo" for the bundled demo pack (a folder named demo is ./demo). `backend` is
"auto" or a name in BACKENDS (live/engines/backends.py, the registry); "auto" picks the fastest that loads
here and logs one line saying which and why. An explicit backend that cannot load raises one UserError
line saying why, never a silent substitute.

Heavy imports (onnx, onnxruntime, torch, tensorrt) happen only inside the functions that need them, so the
commands can build their options from this package cheaply.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from autoencoded.errors import UserError
from autoencoded.live.engines.backends import (
    BACKENDS,
    EngineOptions,
    backend_choices,
    backend_help,
    check_backend,
    open_backend,
    register_backend,
    tensorrt_unavailable,
)
from autoencoded.live.engines.base import Engine

__all__ = ["BACKENDS", "DEMO", "Engine", "EngineOptions", "backend_choices", "backend_help", "model_name",
           "open_engine", "register_backend", "resolve_model", "tensorrt_unavailable"]
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
    from autoencoded.live.engines.pack import is_pack

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


def open_engine(model: str | Path | None = None, backend: str = "auto", log: Callable[[str], object] = print,
                *, which: str = "best", max_batch: int = 16, precision: str = "fp16",
                threads: int | None = None, memory: bool = False) -> Engine:
    """Open `model` with `backend` (see module doc). `which` picks best/latest checkpoint of a run;
    `max_batch` and `precision` apply to TensorRT; `threads` to onnxruntime on the CPU (default: every
    physical core but one, see ort_backend.cpu_threads). `memory`: also load the pack's memory bank into
    `engine.memory` (live and render), saying in one line what it holds, or why there is none."""
    check_backend(backend)
    kind, path = resolve_model(model)
    engine = open_backend(backend, EngineOptions(kind, path, log, which, max_batch, precision, threads))
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
