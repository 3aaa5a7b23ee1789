"""A pack's memory bank from its film: every frame through the pack's own encoder, deduplicated, written
beside the ONNX files (autoencoded.live.engines.memory_bank).

The latents come from ONNX Runtime on the CPU running the pack's encoder.onnx, so the bank lies in exactly
the space live's latents lie in. The film's frames come as `autoencoded eval` reads footage: a prepared
dataset's frames as they are, a video decoded and framed at the model's size as `prepare` frames it.

Dedupe walks the film in order and keeps a frame only when its latent is farther than the threshold from
the last one kept: a held shot collapses into one remembered frame. The threshold starts at the memory's
own hysteresis radius (autoencoded.live.control.memory.RADIUS film steps: frames closer than that are ones
the memory would not move between) and, when the bank would not keep the pack within its budget
(memory_bank.MAX_PACK_BYTES, or the smaller one `--max-pack-mb` gives export and memory), rises to the
lowest threshold that does (to within 1%), so the bank keeps as many of the film's frames as fit; model.json
records the threshold, the budget, how many frames there were and how many were kept.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from pathlib import Path

import numpy as np

from autoencoded.documents import parse_json
from autoencoded.errors import UserError, one_line
from autoencoded.live.control.memory import RADIUS
from autoencoded.live.engines import memory_bank
from autoencoded.live.engines.pack import read_pack
from autoencoded.training.evaluation import open_footage, run_folder

BATCH = 32


def build_bank(pack_dir: Path, footage: str | Path, log: Callable[[str], object] = print,
               budget: int = memory_bank.MAX_PACK_BYTES) -> dict:
    """Encode every frame of `footage` with the pack's encoder and write the pack's bank, keeping the whole
    pack within `budget` bytes; -> its model.json record (the caller writes it into model.json). Refusals
    are one UserError line."""
    from autoencoded.live.engines.ort_backend import OnnxRuntimeEngine

    pack_dir = Path(pack_dir)
    pack = read_pack(pack_dir)
    source = open_footage(footage, pack.width, pack.height, limit=0, batch=BATCH)
    log(f"memory: encoding the frames of {footage} with the pack's encoder (onnxruntime)")
    means: list[np.ndarray] = []
    with OnnxRuntimeEngine(pack, device="cpu") as engine:
        for frames in source.frames:
            mu, _ = engine.encode(frames)
            means.append(np.asarray(mu, dtype=np.float32))
    _say_what_was_read(source, footage, log)
    if not means:
        raise UserError(f"{footage}: no frames to remember")
    mu = memory_bank.check_latents(np.concatenate(means), pack.z_dim, f"{footage} through {pack_dir}")
    step = film_step(mu)
    limit = memory_bank.rows_within(pack_dir, pack.z_dim, budget)
    if limit < 1:
        raise UserError(f"the model pack leaves no room for a memory bank within {budget / 1e6:g} MB")
    keep, threshold = reduce(mu, step, limit)
    reduction = {"method": "dedupe", "threshold": threshold, "threshold_steps": threshold / step if step else None,
                 "frames": len(mu), "kept": len(keep), "budget_bytes": budget}
    src = {"footage": str(Path(footage).resolve()), "frames": len(mu)}
    record = memory_bank.write_bank(pack_dir, mu[keep], keep, pack.z_dim, step=step, source=src,
                                    reduction=reduction,
                                    created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
    log(f"memory: {len(keep)} of {len(mu)} frames kept (dedupe at {threshold:.3g}, "
        f"{reduction['threshold_steps']:.2f} film steps), {(pack_dir / memory_bank.MEMORY_FILE).stat().st_size} bytes")
    return record


def _say_what_was_read(source, footage, log: Callable[[str], object]) -> None:
    """A video that was framed anew where its picture changes size, or that stopped before its end, says so:
    the bank must not pass for the whole film when it is not."""
    state = source.decoded
    if state is None:
        return
    for line in state.reframed:
        log(f"memory: {Path(footage).name}: the picture changes size {line}")
    if state.stopped_at is not None:
        of = f" of {source.total}" if source.total else ""
        log(f"memory: {Path(footage).name} stopped at frame {state.stopped_at}{of} ({state.error}); the frames "
            f"after it are not remembered")


def film_step(mu: np.ndarray) -> float:
    """The median distance between consecutive frames that move at all (held frames are not the film's pace)."""
    steps = np.linalg.norm(np.diff(mu.astype(np.float64), axis=0), axis=1)
    moving = steps[steps > 1e-6]
    return float(np.median(moving)) if len(moving) else 0.0


def dedupe(mu: np.ndarray, threshold: float) -> np.ndarray:
    """Indices of the frames kept: the first, then each one farther than `threshold` from the last kept."""
    keep = [0]
    last = mu[0]
    for i in range(1, len(mu)):
        if float(np.linalg.norm(mu[i] - last)) > threshold:
            keep.append(i)
            last = mu[i]
    return np.asarray(keep, dtype=np.int64)


def reduce(mu: np.ndarray, step: float, limit: int) -> tuple[np.ndarray, float]:
    """Dedupe at RADIUS film steps or, when that keeps more than `limit` (>= 1) frames, at the lowest threshold
    (to within 1%) that keeps at most `limit`: doubled until it fits, then bisected between the last that did
    not and the first that did. Doubling alone could keep half of what fits (a long latent's rows are big:
    the demo model's 9472 entries leave room for 227 of the trailer's frames in a 25 MB pack: doubling kept
    100, bisection keeps 227)."""
    threshold = RADIUS * step
    keep = dedupe(mu, threshold)
    if len(keep) <= limit:
        return keep, threshold
    low = threshold  # keeps too many
    while len(keep) > limit:
        low, threshold = threshold, threshold * 2.0
        keep = dedupe(mu, threshold)
    while threshold - low > 0.01 * threshold:  # threshold fits, low does not
        middle = 0.5 * (low + threshold)
        kept = dedupe(mu, middle)
        if len(kept) <= limit:
            keep, threshold = kept, middle
        else:
            low = middle
    return keep, threshold


def run_dataset(weights: Path) -> Path | None:
    """The dataset a run was trained on, when its config.json names one that is here."""
    run = run_folder(weights)
    try:
        cfg = parse_json((run / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    name = cfg.get("dataset") if isinstance(cfg, dict) else None
    if not isinstance(name, str) or not name:
        return None
    for candidate in (Path(name), run / name):
        if (candidate / "dataset.json").is_file():
            return candidate
    return None


def bank_for_export(pack_dir: Path, weights: Path, log: Callable[[str], object],
                    budget: int = memory_bank.MAX_PACK_BYTES) -> dict | None:
    """Export's bank: from the run's own dataset when it is here; None (and one line saying so) otherwise."""
    dataset = run_dataset(weights)
    later = "add one with `autoencoded memory MODEL FOOTAGE`"
    if dataset is None:
        log(f"memory: the run's dataset is not here (config.json of {run_folder(weights)}); "
            f"the pack has no memory bank ({later})")
        return None
    try:
        return build_bank(pack_dir, dataset, log, budget)
    except UserError as exc:
        log(f"memory: {one_line(exc)}; the pack has no memory bank ({later})")
        return None
