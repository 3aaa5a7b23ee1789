"""Checkpoint -> model pack (encoder.onnx, decoder.onnx, model.json, and memory.safetensors when the run's
dataset is here: export/memory_build.py), written whole or not at all.

The torch.onnx dynamo exporter (opset 18) writes self-contained files (external_data=False) with a
dynamic batch axis and fixed H x W; its optimiser folds eval-mode BatchNorm into the convs. The pack is
built in a hidden temp folder beside the target, validated by reading it back (autoencoded.live.engines.pack.read_pack),
optionally verified against torch on real frames, and only then renamed into place.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import json
import logging
import os
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import onnx
import torch

from autoencoded.documents import parse_json
from autoencoded.errors import UserError, one_line
from autoencoded.fileio import Claim, check_writable, write_failed
from autoencoded.live.engines import pack as packfmt
from autoencoded.live.engines.memory_bank import MAX_PACK_BYTES
from autoencoded.training.evaluation import run_palette_record
from autoencoded.training.model import AutoEncoder, Decoder, ModelConfig, autoencoder_from_state
from autoencoded.training.weights import atomic_write_bytes, load_weights, resolve_checkpoint, sha256_file

OPSET = 18
MAX_EXPORT_BATCH = 1024


def export_onnx(module: torch.nn.Module, example: torch.Tensor, path: Path, input_name: str,
                output_names: list[str]) -> None:
    """One module -> one self-contained ONNX file with a dynamic batch axis."""
    batch = torch.export.Dim("batch", min=1, max=MAX_EXPORT_BATCH)
    arg = "x" if input_name == "image" else "z"
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping ..." is noise here
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(path), input_names=[input_name], output_names=output_names,
                          dynamic_shapes={arg: {0: batch}}, opset_version=OPSET, external_data=False,
                          dynamo=True, optimize=True, verbose=False)
    quiet.setLevel(level)
    if not path.is_file():
        raise RuntimeError(f"the ONNX exporter wrote no {path.name}")
    stray = path.with_name(path.name + ".data")
    if stray.exists():  # never leave weights outside the self-contained file
        raise RuntimeError(f"the ONNX exporter wrote external data {stray.name} despite external_data=False")
    # the exporter falls back quietly when it specialises the batch axis: a pack that takes one frame only
    # would fail at the first batch live or render sends
    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    if not dims or not dims[0].dim_param:
        raise RuntimeError(f"the ONNX exporter fixed the batch axis of {path.name} (a module whose shapes "
                           "depend on the batch size)")


def _training_summary(weights: Path, meta: dict) -> dict | None:
    sidecar = weights.with_name(weights.name.removesuffix(".safetensors") + ".json")
    summary: dict = {}
    if sidecar.is_file():
        try:
            data = parse_json(sidecar.read_text(encoding="utf-8"))
            if isinstance(data, dict):
                summary = {k: v for k, v in data.items() if len(json.dumps(v, default=str)) < 4096}
        except (ValueError, OSError):
            summary = {"sidecar_unreadable": sidecar.name}
    for k, v in meta.items():
        if k not in ("format", "format_version", "config"):
            summary.setdefault(k, v)
    return summary or None


def write_pack(model: AutoEncoder, cfg: ModelConfig, out: Path, *, source: Path | None = None,
               source_sha256: str | None = None, training: dict | None = None,
               palette: dict | None = None) -> packfmt.ModelPack:
    """Export `model` into folder `out` (which must not exist or be empty) and read it back."""
    model = model.eval().cpu()
    out.mkdir(parents=True, exist_ok=True)
    files = {"encoder": "encoder.onnx", "decoder": "decoder.onnx"}
    # examples of batch 2: torch.export specialises a size-1 axis that a reshape reads (a spatial code's
    # flatten) to the constant 1, and the batch axis must stay dynamic
    with torch.no_grad():
        export_onnx(model.encoder, torch.zeros(2, 3, cfg.height, cfg.width), out / files["encoder"],
                    "image", ["mu", "log_sigma"])
        # the film's decoder as ONNX Runtime's blocked convolutions take it (Decoder.padded_for_inference)
        decoder = model.decoder.padded_for_inference() if isinstance(model.decoder, Decoder) else model.decoder
        export_onnx(decoder, torch.zeros(2, cfg.latent_dim), out / files["decoder"], "z", ["image"])
    from importlib.metadata import PackageNotFoundError, version
    try:
        tool_version = version("autoencoded")
    except PackageNotFoundError:
        tool_version = "unknown"
    meta = {
        "format": packfmt.FORMAT, "format_version": packfmt.FORMAT_VERSION,
        "arch": cfg.arch, "width": cfg.width, "height": cfg.height, "z_dim": cfg.latent_dim,
        "batch": "dynamic", "opset": OPSET,
        "normalisation": dict(packfmt.NORMALISATION),
        "config": cfg.to_dict(),
        "latent": cfg.plan.record(),  # which entries live noise plays, and at what scale
        "source_checkpoint": str(source.resolve()) if source else None,
        "source_sha256": source_sha256,
        "model_hash": packfmt.hash_files(out, files),
        "training": training,
        "palette": palette,  # the training frames' CIELAB mean and covariance, for `autoencoded eval`
        "files": files,
        "verify": None,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "tool_version": tool_version,
    }
    write_meta(out, meta)
    return packfmt.read_pack(out)


def write_meta(pack_dir: Path, meta: dict) -> None:
    path = pack_dir / packfmt.META_FILE
    atomic_write_bytes(path, (json.dumps(meta, indent=2, default=str) + "\n").encode())
    os.chmod(path, 0o644)


def update_meta(pack_dir: Path, **fields: object) -> None:
    meta = json.loads((pack_dir / packfmt.META_FILE).read_text(encoding="utf-8"))
    meta.update(fields)
    write_meta(pack_dir, meta)


def _prepare_target(out: Path, overwrite: bool) -> None:
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise UserError(f"{out} already exists; pass --overwrite to replace it")
        if not out.is_dir() or out.is_symlink():
            raise UserError(f"{out} exists and is not a folder; refusing to replace it")
        if any(out.iterdir()) and not packfmt.is_pack(out):
            raise UserError(f"{out} is a non-empty folder that is not a model pack; refusing to replace it")


def export_checkpoint(source: str | Path, out: str | Path, *, which: str = "best", overwrite: bool = False,
                      verify: bool = False, frames: str | Path | None = None,
                      log: Callable[[str], object] = print,
                      max_pack_bytes: int = MAX_PACK_BYTES) -> tuple[Path, dict | None]:
    """Export a run folder or checkpoint to the model pack `out`, its memory bank keeping the whole pack
    within `max_pack_bytes`. -> (pack folder, verify report or None).

    Verification failure raises UserError and leaves no pack at `out` (an old one stays untouched).
    """
    out = Path(out)
    _prepare_target(out, overwrite)
    weights = resolve_checkpoint(source, which=which)
    cfg, state, meta = load_weights(weights)
    try:
        model = autoencoder_from_state(cfg, state)
    except RuntimeError as exc:
        raise UserError(f"{weights}: weights do not match their config ({one_line(exc)})") from None
    check_writable(out.parent, "the model pack")
    # the pack's name is held until the pack is in place: a second export (or `memory`) into it meanwhile is
    # refused in one line, instead of both saying "wrote" and the later silently replacing the earlier
    claim = Claim(out, "a model pack")
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _prepare_target(out, overwrite)  # again, under the claim: an export may have finished into it meanwhile
        log(f"exporting {weights} ({cfg.arch}, {cfg.width}x{cfg.height}, z={cfg.latent_dim})")
        write_pack(model, cfg, tmp, source=weights, source_sha256=sha256_file(weights),
                   training=_training_summary(weights, meta), palette=run_palette_record(weights))
        report = None
        if verify:
            from autoencoded.live.engines.parity import load_frames, verify_pack
            imgs, where = load_frames(frames, cfg.width, cfg.height)
            report = verify_pack(model, tmp, imgs)
            report["frames"] = where
            update_meta(tmp, verify=report)
            log(f"verify on {where}: image max abs error {report['image']['max_abs']:.2e}, "
                f"PSNR {report['image']['psnr_db']:.1f} dB; latent max abs error {report['mu']['max_abs']:.2e}")
            if not report["ok"]:
                raise UserError(f"verification failed: {report['reason']} (pack not written)")
        from autoencoded.export.memory_build import bank_for_export
        # the film's frames, when the run's dataset is here
        memory = bank_for_export(tmp, weights, log, max_pack_bytes)
        if memory is not None:
            update_meta(tmp, memory=memory)
        _replace(tmp, out)
    except OSError as exc:  # a disk that fills up on the way: the old pack, if any, is untouched
        raise write_failed(out, exc, "the model pack") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        claim.release()
    return out, report


def _replace(tmp: Path, out: Path) -> None:
    """Rename the finished temp pack into place; an old pack is moved aside first, then removed."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def random_pack(arch: str, out: Path, width: int = 256, height: int = 144, seed: int = 0) -> packfmt.ModelPack:
    """A pack from a randomly initialised model (bench and tests): BatchNorm stats made non-trivial."""
    torch.manual_seed(seed)
    cfg = ModelConfig.preset(arch, width=width, height=height)
    model = AutoEncoder(cfg)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return write_pack(model.eval(), cfg, out, training=None)
