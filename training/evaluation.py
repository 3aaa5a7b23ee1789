"""`autoencoded eval`, the work: how good a model's reconstructions are, against baselines a model must beat.

For each footage (a prepared dataset, or a video decoded at the model's size exactly as `prepare` does,
with --crop auto), the model decodes the mean of every frame and is scored beside two baselines on the same
frames (autoencoded.metrics): the 16x9 thumbnail and a sigma-4 blur. Beside PSNR and SSIM, the figures that
say whether a model keeps the original's character rather than acting as a codec, on footage it never saw:
- structure: the luma correlation of output and input at 32x18 (does the composition survive?);
- palette: the CIELAB Gaussian 2-Wasserstein distance to the training frames, of the inputs and of the
  outputs (the output takes on the film's colours when it is closer than the input);
- colourfulness (Hasler-Suesstrunk) of inputs and outputs;
- motion: mean frame-to-frame change of outputs against inputs (a model that turns every frame into the
  same haze does not follow its input);
- warping error: output frame t+1 warped onto t along the input's optical flow (flicker where the input
  holds still); the inputs' own is the floor the flow's mistakes set.

The training frames' colours travel with the model: the trainer writes RUN/dataset_palette.json (their Lab
mean and covariance) and export copies it into model.json's "palette". Packs from before that record only an
RGB histogram, which no figure uses any more: the palette column then says why it is missing, and
`--palette FOOTAGE` (the training film) stands in.
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
from autoencoded.fileio import atomic_write_bytes
from autoencoded.training.data import META_FILE as DATASET_META

PALETTE_FILE = "dataset_palette.json"  # in a run folder, written by the trainer; copied into model.json
PALETTE_SAMPLE = 2048  # frames sampled from a dataset for its colours


@dataclass(frozen=True)
class Colours:
    """A reference palette: the CIELAB mean and covariance of a film's pixels, and where they came from."""

    mean: np.ndarray
    cov: np.ndarray
    source: str
    sharpness: float | None = None  # the frames' median variance of the Laplacian (the dream's bar)

    def w2(self, g: metrics.LabGaussian) -> float:
        return metrics.w2_gaussian(g.mean, g.cov, self.mean, self.cov)


def dataset_colours(ds) -> metrics.LabGaussian:
    """The Lab Gaussian of the training frames (of at most PALETTE_SAMPLE evenly spaced frames)."""
    n = len(ds)
    idx = np.unique(np.linspace(0, n - 1, min(n, PALETTE_SAMPLE)).round().astype(np.int64))
    g = metrics.LabGaussian()
    for start in range(0, len(idx), 64):
        g.add(ds.batch(idx[start:start + 64]))
    return g


SHARPNESS_SAMPLE = 256  # frames sampled from a dataset for its sharpness


def palette_record(ds) -> dict:
    g = dataset_colours(ds)
    n = len(ds)
    idx = np.unique(np.linspace(0, n - 1, min(n, SHARPNESS_SAMPLE)).round().astype(np.int64))
    sharp = np.concatenate([metrics.sharpness_frames(ds.batch(idx[i:i + 64])) for i in range(0, len(idx), 64)])
    return {"lab_mean": [round(float(v), 6) for v in g.mean],
            "lab_cov": [[round(float(v), 6) for v in row] for row in g.cov],
            "pixel_stride": metrics.LAB_STRIDE, "pixels": g.n, "frames": len(ds),
            "sharpness": round(float(np.median(sharp)), 4)}


def read_palette(record: object, source: str) -> tuple[Colours | None, str]:
    """The Colours of a palette record, or None and why there are none (said in the eval table)."""
    if not isinstance(record, dict):
        return None, f"{source} records no training colours (exported by an older version)"
    if "lab_mean" not in record:
        what = "only an RGB histogram" if "histogram" in record else "no Lab mean and covariance"
        return None, (f"{source} records {what} of its training frames (an older version): "
                      "re-export the run or give --palette FOOTAGE")
    try:
        mean = np.asarray(record["lab_mean"], np.float64)
        cov = np.asarray(record.get("lab_cov"), np.float64)
    except (TypeError, ValueError):
        mean = cov = np.zeros(0)
    sound = (mean.shape == (3,) and cov.shape == (3, 3) and np.all(np.isfinite(mean)) and np.all(np.isfinite(cov))
             and np.allclose(cov, cov.T, atol=1e-3) and np.linalg.eigvalsh((cov + cov.T) / 2).min() > -1e-3)
    if not sound:
        return None, f"{source}: its training colours are malformed (not a Lab mean and covariance)"
    sharp = record.get("sharpness")
    sharp = float(sharp) if isinstance(sharp, (int, float)) and not isinstance(sharp, bool) and sharp > 0 else None
    return Colours(mean, cov, source, sharp if sharp is not None and np.isfinite(sharp) else None), ""


def run_folder(path: Path) -> Path:
    """The run folder of a run, of a checkpoint in its checkpoints/ folder, or of a lone checkpoint."""
    if path.is_dir():
        return path
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def run_palette_record(path: Path) -> dict | None:
    """The palette record a run's trainer wrote (RUN/dataset_palette.json), if it is there and current."""
    try:
        data = json.loads((run_folder(path) / PALETTE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return data if read_palette(data, PALETTE_FILE)[0] is not None else None


def write_run_palette(run: Path, ds) -> None:
    """The training frames' colours in RUN/dataset_palette.json, which export copies into the model pack so
    that `autoencoded eval` can measure palette transfer without the dataset. A record from an older
    version (an RGB histogram) is written anew; a current one is kept."""
    if run_palette_record(run) is None:
        atomic_write_bytes(Path(run) / PALETTE_FILE, (json.dumps(palette_record(ds)) + "\n").encode())


def model_palette(kind: str, path: Path) -> tuple[Colours | None, str]:
    """The training colours recorded with a model (model.json's "palette" for a pack, the run's
    dataset_palette.json for a run or checkpoint), or None and why not."""
    if kind != "pack":
        file = run_folder(path) / PALETTE_FILE
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            return None, f"the run has no readable {PALETTE_FILE} (written by the trainer of a newer version)"
        return read_palette(data, f"the run's {PALETTE_FILE}")
    try:
        meta = json.loads((path / "model.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None, "the pack's model.json is unreadable"
    return read_palette(meta.get("palette") if isinstance(meta, dict) else None, "the pack's model.json")


def footage_palette(spec: str, width: int, height: int, batch: int) -> Colours:
    """The colours of every frame of a footage (--palette: a film to compare with instead of the record)."""
    fo = open_footage(spec, width, height, 0, batch)
    g = metrics.LabGaussian()
    sharp = []
    for frames in fo.frames:
        g.add(frames)
        sharp.append(metrics.sharpness_frames(frames))
    if g.n == 0:
        raise UserError(f"--palette {spec}: no frames")
    return Colours(g.mean, g.cov, str(spec), float(np.median(np.concatenate(sharp))))


@dataclass
class Footage:
    name: str
    frames: Iterator[np.ndarray]  # batches of uint8 N x H x W x 3 at the model's size, in order
    total: int | None
    decoded: object = None  # a video's training.video.Decoded, once `frames` is read: where it stopped, why


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

    state = video.Decoded()

    def decoded() -> Iterator[np.ndarray]:
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
    return Footage(str(path), decoded(), total, state)


class _Tally:
    """The running sums of one evaluation, for the inputs, the model and each baseline."""

    def __init__(self, palette: Colours | None) -> None:
        self.palette = palette
        self.names = ["model", *metrics.baselines(np.zeros((1, 2, 2, 3), np.uint8))]  # the candidates
        seq_names = ["inputs", *self.names]
        self.scores = {name: metrics.Score() for name in self.names}
        self.structure = dict.fromkeys(self.names, 0.0)
        self.colourful = dict.fromkeys(seq_names, 0.0)
        self.lab = {name: metrics.LabGaussian() for name in seq_names}
        self.warp = metrics.WarpError()
        # frame-to-frame change summed over pairs, for the inputs, the model and each baseline: the baselines
        # follow every input frame exactly at their own sharpness, so their ratios say how much of the input's
        # change a low-pass copy keeps (fine texture moving in grass or fur is change no blurry picture shows)
        self.moved = dict.fromkeys(seq_names, 0.0)
        self.pairs = 0
        self.last: dict[str, np.ndarray] = {}
        self.done = 0

    def add(self, frames: np.ndarray, recon: np.ndarray) -> None:
        seqs = {"inputs": frames, "model": recon, **metrics.baselines(frames)}
        for name, out in seqs.items():
            self.colourful[name] += float(metrics.colourfulness_frames(out).sum())
            if self.palette is not None:
                self.lab[name].add(out)
            if name != "inputs":
                self.scores[name].add(frames, out)
                self.structure[name] += float(metrics.structure_frames(frames, out).sum())
        self.warp.add(frames, {name: seqs[name] for name in self.names})
        k = len(frames) - (0 if self.last else 1)
        if k > 0:
            for name, seq in seqs.items():
                joined = np.concatenate([self.last[name], seq]) if self.last else seq
                self.moved[name] += metrics.motion(joined) * k
            self.pairs += k
        self.last = {name: seq[-1:] for name, seq in seqs.items()}
        self.done += len(frames)


def evaluate(engine, footage: Footage, palette: Colours | None, palette_missing: str = "",
             progress=None, dream=None) -> dict:
    """Score `engine` (decode the mean) and the baselines on every frame of `footage`. `dream`, when given
    (autoencoded.live.dream.DreamTally), sees each batch and its noise-0 render too, and its figures join
    the result as "dream"."""
    tally = _Tally(palette)
    for frames in footage.frames:
        done = tally.done
        try:
            recon = engine.checked_reconstruct(frames)
        except Exception as exc:
            raise UserError(f"{footage.name}: the model failed on frames {done}-{done + len(frames) - 1} "
                            f"({one_line(exc, typed=True)})") from None
        tally.add(frames, recon)
        if dream is not None:
            dream.add(frames, recon)
        if progress:
            progress(tally.done, footage.total)
    done, scores, lab, warp = tally.done, tally.scores, tally.lab, tally.warp
    colourful, structure = tally.colourful, tally.structure
    if done == 0:
        raise UserError(f"{footage.name}: no frames to evaluate")
    mean = {name: v / tally.pairs if tally.pairs else 0.0 for name, v in tally.moved.items()}

    def ratio(name: str) -> float | None:
        return mean[name] / mean["inputs"] if mean["inputs"] > 0 else None

    def w2(name: str) -> float | None:
        return palette.w2(lab[name]) if palette is not None else None

    table = {name: {"psnr_db": s.psnr, "ssim": s.ssim, "structure": structure[name] / done,
                    "palette_w2": w2(name), "colourfulness": colourful[name] / done,
                    "motion_ratio": ratio(name), "warp_error": warp.mean(name)} for name, s in scores.items()}
    thumb = table["thumbnail 16x9"]
    return {
        "footage": footage.name, "frames": done, "scores": table,
        "inputs": {"palette_w2": w2("inputs"), "colourfulness": colourful["inputs"] / done,
                   "warp_error": warp.mean("inputs")},
        "psnr_minus_thumb_db": table["model"]["psnr_db"] - thumb["psnr_db"],
        "motion": {"inputs": mean["inputs"], "outputs": mean["model"], "ratio": ratio("model"),
                   "baseline_ratios": {name: ratio(name) for name in scores if name != "model"}},
        "palette": None if palette is None else {
            "reference": palette.source, "inputs_w2": w2("inputs"), "outputs_w2": w2("model"),
            "transfer": w2("model") < w2("inputs")},
        "palette_missing": palette_missing if palette is None else None,
        "dream": None if dream is None else dream.figures(palette.sharpness if palette is not None else None,
                                                          palette),
    }
