"""Reconstruction quality of a model pack on a prepared dataset, against plain blurs of the same frames.

    python demo/evaluate_demo.py build/demo/dataset [--model live/assets/demo_model] [--limit 0]

Prints PSNR (of the mean squared error over all frames: a black frame blurred is exact, and one
infinite per-frame PSNR would swamp a mean) and SSIM (mean over frames, on RGB at the model's size) for the model's reconstructions
(decode the mean, noise 0) and for Gaussian blurs of increasing strength: a VAE-GAN's reconstructions are
hazy, so a blur is the honest baseline to beat.
"""

from __future__ import annotations

import argparse
import json

import cv2
import numpy as np

from autoencoded.live.engines import open_engine
from autoencoded.training.data import open_dataset


def mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))


def psnr_of(mean_squared_error: float) -> float:
    return float("inf") if mean_squared_error == 0 else float(10 * np.log10(255.0**2 / mean_squared_error))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al. 2004 SSIM, 11x11 Gaussian window (sigma 1.5), averaged over channels."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    out = []
    for ch in range(a.shape[-1]):
        x = a[..., ch].astype(np.float64)
        y = b[..., ch].astype(np.float64)
        blur = lambda im: cv2.GaussianBlur(im, (11, 11), 1.5)  # noqa: E731
        mx, my = blur(x), blur(y)
        sxx = blur(x * x) - mx * mx
        syy = blur(y * y) - my * my
        sxy = blur(x * y) - mx * my
        s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
        out.append(s.mean())
    return float(np.mean(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset")
    ap.add_argument("--model", default=None, help="model pack (default: the bundled demo model)")
    ap.add_argument("--limit", type=int, default=0, help="evaluate the first N frames only (0 = all)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args()

    ds = open_dataset(args.dataset, allow_partial=True)
    engine = open_engine(args.model, backend="onnxruntime")
    n = len(ds) if args.limit <= 0 else min(args.limit, len(ds))
    sigmas = (1.0, 2.0, 4.0, 8.0, 16.0)
    scores: dict[str, list[tuple[float, float]]] = {"model": []}
    scores.update({f"gaussian blur sigma {s:g}": [] for s in sigmas})
    for start in range(0, n, args.batch):
        frames = ds.batch(np.arange(start, min(n, start + args.batch)))
        recon = engine.reconstruct(frames)
        for f, r in zip(frames, recon, strict=True):
            scores["model"].append((mse(f, r), ssim(f, r)))
            for s in sigmas:
                b = cv2.GaussianBlur(f, (0, 0), s)
                scores[f"gaussian blur sigma {s:g}"].append((mse(f, b), ssim(f, b)))
    engine.close()
    table = {k: {"psnr_db": psnr_of(float(np.mean([m for m, _ in v]))), "ssim": float(np.mean([q for _, q in v]))}
             for k, v in scores.items()}
    print(f"{n} frames of {args.dataset} at {ds.width}x{ds.height}")
    print(f"{'':28s} {'PSNR dB':>8s} {'SSIM':>6s}")
    for k, v in table.items():
        print(f"{k:28s} {v['psnr_db']:8.2f} {v['ssim']:6.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"frames": n, "dataset": args.dataset, "scores": table}, f, indent=2)


if __name__ == "__main__":
    main()
