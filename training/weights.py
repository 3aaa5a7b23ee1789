"""The model weights file: safetensors with the ModelConfig in its metadata. Never pickle.

Layout of a training run (written by training/, read by export/ and live/):

    RUN/checkpoints/step-0000200.safetensors        weights (encoder./decoder./discriminator. keys)
    RUN/checkpoints/step-0000200.json               sidecar: step, epoch, noise, losses, quality
    RUN/checkpoints/step-0000200.state.safetensors  optimizer + RNG state (training only)
    RUN/checkpoints/index.json                      {"latest": "step-...safetensors", "best": "..."}

Weights metadata (all strings, as safetensors requires):
    format = "autoencoded-weights", format_version = "1", config = ModelConfig JSON,
    plus free-form keys (step, noise, ...).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save

from autoencoded.documents import parse_json
from autoencoded.errors import UserError, one_line
from autoencoded.fileio import atomic_write_bytes, sha256_file
from autoencoded.training.model import ModelConfig

__all__ = ["atomic_write_bytes", "sha256_file", "save_weights", "load_weights", "read_metadata",
           "resolve_checkpoint"]

FORMAT = "autoencoded-weights"
FORMAT_VERSION = 1
STEP_RE = re.compile(r"^step-(\d+)\.safetensors$")


def save_weights(path: str | os.PathLike, cfg: ModelConfig, state: dict[str, torch.Tensor],
                 metadata: dict[str, object] | None = None) -> None:
    """Atomically write a weights file with the config embedded."""
    meta = {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in (metadata or {}).items()}
    meta.update(format=FORMAT, format_version=str(FORMAT_VERSION), config=cfg.to_json())
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    atomic_write_bytes(path, st_save(tensors, metadata=meta))


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{path}: not a safetensors weights file ({one_line(exc)}); "
                        "only .safetensors checkpoints are loaded, never pickles") from None


def load_weights(path: str | os.PathLike, device: str = "cpu") -> tuple[ModelConfig, dict[str, torch.Tensor], dict]:
    """Read a weights file: (config, state dict, metadata). Bad files raise UserError with one line."""
    path = Path(path)
    meta = read_metadata(path)
    if meta.get("format") != FORMAT:
        raise UserError(f"{path}: safetensors file without autoencoded metadata (not a checkpoint of this tool)")
    try:
        version = int(meta.get("format_version", "0"))
    except ValueError:
        version = 0
    if version > FORMAT_VERSION or version < 1:
        raise UserError(f"{path}: weights format version {meta.get('format_version')!r} is not supported "
                        f"(this tool reads up to {FORMAT_VERSION})")
    try:
        cfg = ModelConfig.from_dict(parse_json(meta["config"]))
    except (KeyError, ValueError, TypeError) as exc:
        raise UserError(f"{path}: bad model config in checkpoint ({one_line(exc)})") from None
    try:
        state: dict[str, torch.Tensor] = {}
        with safe_open(str(path), framework="pt", device=device) as f:
            for k in f.keys():
                state[k] = f.get_tensor(k)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise UserError(f"{path}: corrupt checkpoint ({one_line(exc)})") from None
    check_config_fits(path, cfg, state)
    return cfg, state, meta


def _shape(shape) -> str:
    return "x".join(map(str, shape)) or "scalar"


def check_config_fits(path: Path, cfg: ModelConfig, state: dict[str, torch.Tensor]) -> None:
    """The model a checkpoint's config describes must be the one its tensors hold. It is built on the
    meta device first (shapes, no memory), so a config asking for gigabytes beside megabytes of weights
    (a 9 MB file once asked for 3.4 GB) is refused before anything is allocated."""
    from autoencoded.training.model import AutoEncoder
    try:
        with torch.device("meta"):
            want = {k: tuple(v.shape) for k, v in AutoEncoder(cfg).state_dict().items()}
    except (ValueError, TypeError, RuntimeError, OverflowError) as exc:
        raise UserError(f"{path}: bad model config in checkpoint ({one_line(exc)})") from None
    for prefix in ("", "ema."):  # the live weights, and the averaged ones when the run kept them
        held = {k[len(prefix):]: tuple(v.shape) for k, v in state.items()
                if k.startswith((f"{prefix}encoder.", f"{prefix}decoder."))}
        if prefix and not held:
            continue
        if held != want:
            bad = next((k for k in want if held.get(k) != want[k]), None) or next(k for k in held if k not in want)
            what = (f"{prefix}{bad}: the config makes {_shape(want[bad])}, the file holds "
                    f"{_shape(held[bad]) if bad in held else 'nothing'}" if bad in want
                    else f"{prefix}{bad} is not part of the configured model")
            raise UserError(f"{path}: its model config does not match its weights ({what}); refused "
                            "before building the model")


def resolve_checkpoint(path: str | os.PathLike, which: str = "best") -> Path:
    """A run folder, its checkpoints/ folder, or a .safetensors file -> the weights file to load.

    `which` is "best" or "latest"; index.json names them, else the highest step wins.
    """
    p = Path(path)
    if p.is_file():
        if p.name.endswith(".state.safetensors"):
            raise UserError(f"{p}: this is optimizer state, not model weights; pass the step-*.safetensors beside it")
        return p
    if not p.exists():
        raise UserError(f"{p}: no such run folder or checkpoint")
    ckdir = p / "checkpoints" if (p / "checkpoints").is_dir() else p
    index = ckdir / "index.json"
    if index.is_file():
        try:
            doc = parse_json(index.read_text())
            name = (doc.get(which) or doc.get("latest")) if isinstance(doc, dict) else None
        except (ValueError, OSError):
            name = None
        if name and (ckdir / name).is_file():
            return ckdir / name
    steps = sorted((int(m.group(1)), f) for f in ckdir.iterdir() if (m := STEP_RE.match(f.name)))
    if not steps:
        raise UserError(f"{p}: no checkpoints found (expected checkpoints/step-*.safetensors)")
    return steps[-1][1]
