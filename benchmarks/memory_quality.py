"""What the `memory` control does to footage a model never saw: the figures issue 22's "done when" names.

    .venv/bin/python benchmarks/memory_quality.py [--model live/assets/demo_model] --film DATASET
        [--footage ../shared/footage/foreign] [--every 4] [--strip docs/img/memory.png] [--json out.json]

For every clip of --footage, its frames at the model's size (decoded and framed as `prepare` and `eval` do),
through the render path's own code (autoencoded.live.loop.model_pass.encode_effects_decode with one LatentFX a clip, as
`autoencoded render` runs it, minus the video encoder's loss) at memory 0, 0.5 and 1. For every --every-th
frame, at the model's size:
- nearest film frame: the PSNR of the frame to the nearest frame of --film (the model's training frames: a
  prepared dataset), exact, over every film frame; for the input, memory 0, 0.5 and 1;
- colours: the CIELAB Gaussian 2-Wasserstein distance of all those frames to the film's (metrics.w2_gaussian);
- colourfulness (Hasler-Suesstrunk): a haze is grey.
Also checks that memory 0 is bit-identical to the same render without a bank (the whole effect skipped) and prints a markdown
table. --strip draws one foreign frame as input | memory 0 | 0.5 | 1 (docs/performing.md's picture).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autoencoded import metrics  # noqa: E402
from autoencoded.live.control.latent import LatentFX  # noqa: E402
from autoencoded.live.control.params import Params  # noqa: E402
from autoencoded.live.engines import open_engine  # noqa: E402
from autoencoded.live.loop.model_pass import encode_effects_decode  # noqa: E402
from autoencoded.training.data import open_dataset  # noqa: E402
from autoencoded.training.evaluation import open_footage  # noqa: E402

AMOUNTS = (0.0, 0.5, 1.0)
BATCH = 8


def nearest_psnr(frames: np.ndarray, film) -> np.ndarray:
    """Per frame, the PSNR to its nearest film frame (`film` a dataset): |a - b|^2 = |a|^2 + |b|^2 - 2 a.b,
    exact over every frame of the film (read in chunks)."""
    a = frames.reshape(len(frames), -1).astype(np.float32)
    a_sq = (a.astype(np.float64) ** 2).sum(1)
    best = np.full(len(a), np.inf)
    for start in range(0, len(film), 128):
        b = film.batch(np.arange(start, min(start + 128, len(film)))).reshape(-1, a.shape[1]).astype(np.float32)
        d2 = a_sq[:, None] + (b.astype(np.float64) ** 2).sum(1)[None, :] - 2.0 * (a @ b.T).astype(np.float64)
        best = np.minimum(best, d2.min(axis=1))
    return np.array([metrics.psnr(m) for m in np.maximum(best, 0.0) / a.shape[1]])


def render_clip(engine, path: Path, every: int) -> dict[str, np.ndarray]:
    """The clip's frames and their renders at each memory amount (every `every`-th frame kept)."""
    fxs = {m: LatentFX(engine.z_dim, plan=engine.latent_plan()) for m in AMOUNTS}
    plain = LatentFX(engine.z_dim, plan=engine.latent_plan())
    out: dict[str, list[np.ndarray]] = {"input": [], "no memory": [], **{f"memory {m:g}": [] for m in AMOUNTS}}
    i = 0
    for frames in open_footage(path, engine.width, engine.height, limit=0, batch=BATCH).frames:
        rows = [j for j in range(len(frames)) if (i + j) % every == 0]
        i += len(frames)
        renders = {f"memory {m:g}": encode_effects_decode(engine, fx, frames, Params(memory=m)) for m, fx in fxs.items()}
        bank, engine.memory = engine.memory, None  # the same render on a pack without a bank
        renders["no memory"] = encode_effects_decode(engine, plain, frames, Params())
        engine.memory = bank
        out["input"].append(frames[rows])
        for name, r in renders.items():
            out[name].append(r[rows])
    return {k: np.concatenate(v) for k, v in out.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(ROOT / "live/assets/demo_model"))
    ap.add_argument("--film", required=True, help="the model's training frames (a prepared dataset)")
    ap.add_argument("--footage", default=str(ROOT.parent / "shared/footage/foreign"),
                    help="a folder of clips the model never saw, or one clip")
    ap.add_argument("--every", type=int, default=4, help="score every N-th frame")
    ap.add_argument("--strip", default=None, help="write input | memory 0 | 0.5 | 1 of one frame here (PNG)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    engine = open_engine(args.model, backend="onnxruntime", log=print, memory=True)
    if engine.memory is None:
        raise SystemExit(f"{args.model} has no memory bank: autoencoded memory {args.model} {args.film}")
    ds = open_dataset(args.film)
    film_lab = metrics.lab_gaussian(np.stack([ds[i] for i in range(0, len(ds), 2)]))
    foot = Path(args.footage)
    clips = sorted(foot.glob("*.mp4")) if foot.is_dir() else [foot]
    names = ["input", "memory 0", "memory 0.5", "memory 1"]
    results: dict[str, dict] = {}
    pooled: dict[str, list[np.ndarray]] = {n: [] for n in names}
    strip = None
    for clip in clips:
        r = render_clip(engine, clip, args.every)
        identical = bool(np.array_equal(r["memory 0"], r["no memory"]))
        row = {"frames": len(r["input"]), "memory0_bit_identical": identical}
        for n in names:
            psnrs = nearest_psnr(r[n], ds)
            g = metrics.lab_gaussian(r[n])
            row[n] = {"nearest_film_psnr_db": float(np.mean(psnrs)), "nearest_film_psnr_min_db": float(psnrs.min()),
                      "lab_w2_to_film": metrics.w2_gaussian(g[0], g[1], *film_lab),
                      "colourfulness": metrics.colourfulness(r[n])}
            pooled[n].append(r[n])
        results[clip.stem] = row
        print(f"{clip.stem}: " + ", ".join(f"{n} {row[n]['nearest_film_psnr_db']:.2f} dB / W2 {row[n]['lab_w2_to_film']:.2f}"
                                         for n in names) + f"; memory 0 == none: {identical}", flush=True)
        if strip is None:
            k = len(r["input"]) // 2
            strip = np.concatenate([r[n][k] for n in names], axis=1)
    allg = {n: metrics.lab_gaussian(np.concatenate(pooled[n])) for n in names}
    results["all"] = {n: {"nearest_film_psnr_db": float(np.mean([results[c.stem][n]["nearest_film_psnr_db"]
                                                                 for c in clips])),
                          "lab_w2_to_film": metrics.w2_gaussian(allg[n][0], allg[n][1], *film_lab)} for n in names}
    print("\n| clip | " + " | ".join(f"{n}: nearest film frame dB / Lab W2" for n in names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for clip, row in results.items():
        print(f"| {clip} | " + " | ".join(f"{row[n]['nearest_film_psnr_db']:.2f} / {row[n]['lab_w2_to_film']:.2f}"
                                         for n in names) + " |")
    print(f"\nmemory 0 bit-identical to no memory on every clip: "
          f"{all(results[c.stem]['memory0_bit_identical'] for c in clips)}")
    if args.strip and strip is not None:
        cv2.imwrite(args.strip, cv2.cvtColor(strip, cv2.COLOR_RGB2BGR))
        print(f"wrote {args.strip}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
