"""`autoencoded eval`, the work: how good a model's reconstructions are, against baselines a model must beat.

For each footage (a prepared dataset, or a video decoded at the model's size exactly as `prepare` does,
with --crop auto), the model decodes the mean of every frame and is scored beside two baselines on the same
frames (autoencoded.metrics): the 16x9 thumbnail and a sigma-4 blur. Two more figures say whether the
model keeps the original's character rather than acting as a codec:
- palette: histogram distance to the training frames, for inputs and for outputs (transfer holds when the
  outputs are closer);
- motion: mean frame-to-frame change of outputs against inputs (a model that turns every frame into the
  same haze does not follow its input).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autoencoded import metrics
from autoencoded.errors import UserError, one_line
from autoencoded.training.data import META_FILE as DATASET_META

PALETTE_FILE = "dataset_palette.json"  # in a run folder, written by the trainer; copied into model.json
PALETTE_SAMPLE = 2048  # frames sampled from a dataset for its histogram


def dataset_palette(ds) -> list[float]:
    """The training frames' 512-bin RGB histogram (from at most PALETTE_SAMPLE evenly spaced frames)."""
    n = len(ds)
    idx = np.unique(np.linspace(0, n - 1, min(n, PALETTE_SAMPLE)).round().astype(np.int64))
    hist = np.zeros(metrics.HIST_BINS**3)
    for start in range(0, len(idx), 64):
        hist += metrics.histogram(ds.batch(idx[start:start + 64])) * len(idx[start:start + 64])
    return [round(float(v), 8) for v in hist / hist.sum()]


def palette_record(ds) -> dict:
    return {"bins_per_channel": metrics.HIST_BINS, "histogram": dataset_palette(ds), "frames": len(ds)}


def read_palette(record: object) -> np.ndarray | None:
    if not isinstance(record, dict) or record.get("bins_per_channel") != metrics.HIST_BINS:
        return None
    hist = record.get("histogram")
    if not isinstance(hist, list) or len(hist) != metrics.HIST_BINS**3:
        return None
    try:
        h = np.asarray(hist, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return h / h.sum() if np.all(np.isfinite(h)) and h.min() >= 0 and h.sum() > 0 else None


def run_folder(path: Path) -> Path:
    """The run folder of a run, of a checkpoint in its checkpoints/ folder, or of a lone checkpoint."""
    if path.is_dir():
        return path
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def run_palette_record(path: Path) -> dict | None:
    """The palette record a run's trainer wrote (RUN/dataset_palette.json), if it is there and sound."""
    try:
        data = json.loads((run_folder(path) / PALETTE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return data if read_palette(data) is not None else None


def model_palette(kind: str, path: Path) -> np.ndarray | None:
    """The training histogram recorded with a model: model.json's "palette" for a pack, the run's
    dataset_palette.json for a run or checkpoint."""
    if kind != "pack":
        record = run_palette_record(path)
        return read_palette(record) if record is not None else None
    try:
        meta = json.loads((path / "model.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return read_palette(meta.get("palette")) if isinstance(meta, dict) else None


@dataclass
class Footage:
    name: str
    frames: Iterator[np.ndarray]  # batches of uint8 N x H x W x 3 at the model's size, in order
    total: int | None


def open_footage(spec: str | os.PathLike, width: int, height: int, limit: int, batch: int) -> Footage:
    path = Path(spec)
    if path.is_dir() and (path / DATASET_META).is_file():
        from autoencoded.training.data import open_dataset

        ds = open_dataset(path, allow_partial=True)
        if (ds.width, ds.height) != (width, height):
            raise UserError(f"{path}: a {ds.width}x{ds.height} dataset, but the model takes {width}x{height}")
        n = len(ds) if limit <= 0 else min(limit, len(ds))

        def batches() -> Iterator[np.ndarray]:
            for start in range(0, n, batch):
                yield ds.batch(np.arange(start, min(n, start + batch)))

        return Footage(str(path), batches(), n)
    if path.is_dir():
        raise UserError(f"{path}: a folder without {DATASET_META} (give a prepared dataset or a video file)")
    if not path.is_file():
        raise UserError(f"{path}: no such footage (give a prepared dataset or a video file)")
    from autoencoded.media.framing import for_video
    from autoencoded.media.probe import probe
    from autoencoded.training import video

    decoder = video.decoder_name()
    info = probe(path, decoder)
    box = for_video(info, "auto", width, height, crop_limit=1.0, decoder=decoder).box  # as prepare frames it

    def decoded() -> Iterator[np.ndarray]:
        state = video.Decoded()
        stream = video.frames(info, decoder, box, width, height, "auto", state)
        chunk: list[np.ndarray] = []
        taken = 0
        try:
            for frame in stream:
                chunk.append(frame.copy())
                taken += 1
                if len(chunk) == batch:
                    yield np.stack(chunk)
                    chunk = []
                if 0 < limit <= taken:
                    break
        finally:
            stream.close()
        if chunk:
            yield np.stack(chunk)

    total = info.expected_frames if limit <= 0 else min(limit, info.expected_frames or limit)
    return Footage(str(path), decoded(), total)


def evaluate(engine, footage: Footage, palette: np.ndarray | None, progress=None) -> dict:
    """Score `engine` (decode the mean) and the baselines on every frame of `footage`."""
    scores = {"model": metrics.Score()}
    scores.update({name: metrics.Score() for name in metrics.baselines(np.zeros((1, 2, 2, 3), np.uint8))})
    pal = metrics.Palette(palette) if palette is not None else None
    # frame-to-frame change summed over pairs, for the inputs, the model and each baseline: the baselines
    # follow every input frame exactly at their own sharpness, so their ratios say how much of the input's
    # change a low-pass copy keeps (fine texture moving in grass or fur is change no blurry picture shows)
    moved = dict.fromkeys(["inputs", *scores], 0.0)
    pairs = 0
    last: dict[str, np.ndarray] = {}
    done = 0
    for frames in footage.frames:
        try:
            recon = engine.reconstruct(frames)
        except Exception as exc:
            raise UserError(f"{footage.name}: the model failed on frames {done}-{done + len(frames) - 1} "
                            f"({one_line(exc, typed=True)})") from None
        seqs = {"inputs": frames, "model": recon, **metrics.baselines(frames)}
        for name, out in seqs.items():
            if name != "inputs":
                scores[name].add(frames, out)
        if pal is not None:
            pal.add(frames, recon)
        k = len(frames) - (0 if last else 1)
        if k > 0:
            for name, seq in seqs.items():
                joined = np.concatenate([last[name], seq]) if last else seq
                moved[name] += metrics.motion(joined) * k
            pairs += k
        last = {name: seq[-1:] for name, seq in seqs.items()}
        done += len(frames)
        if progress:
            progress(done, footage.total)
    if done == 0:
        raise UserError(f"{footage.name}: no frames to evaluate")
    table = {name: {"psnr_db": s.psnr, "ssim": s.ssim} for name, s in scores.items()}
    thumb = table["thumbnail 16x9"]
    mean = {name: v / pairs if pairs else 0.0 for name, v in moved.items()}

    def ratio(name: str) -> float | None:
        return mean[name] / mean["inputs"] if mean["inputs"] > 0 else None

    return {
        "footage": footage.name, "frames": done, "scores": table,
        "psnr_minus_thumb_db": table["model"]["psnr_db"] - thumb["psnr_db"],
        "motion": {"inputs": mean["inputs"], "outputs": mean["model"], "ratio": ratio("model"),
                   "baseline_ratios": {name: ratio(name) for name in scores if name != "model"}},
        "palette": pal.summary() if pal is not None else None,
    }
