"""Picture quality figures shared by `autoencoded eval`, training's evaluations and the recipe benchmark.

All take uint8 RGB frames (N x H x W x 3 or H x W x 3) at the model's size.
- PSNR is of the pooled mean squared error over all frames: a black frame reconstructed exactly would give
  one infinite per-frame PSNR and swamp a mean of PSNRs.
- SSIM is Wang et al. 2004 (11x11 Gaussian window, sigma 1.5) per channel, averaged over channels and frames.
- The two baselines a reconstruction must beat to be worth a model: the 16x9 thumbnail (INTER_AREA down to
  16x9 pixels, INTER_LINEAR back up: the colour layout alone) and a sigma-4 Gaussian blur.
- Palette: an RGB histogram with 8 bins a channel (512 joint bins), compared by the Bhattacharyya distance
  (0 identical, 1 disjoint). A model "transfers its palette" to foreign footage when its outputs are closer
  to the training frames' histogram than its inputs are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

THUMB_SIZE = (16, 9)
BLUR_SIGMA = 4.0
HIST_BINS = 8


def _frames(x: np.ndarray) -> np.ndarray:
    return x[None] if x.ndim == 3 else x


def psnr(mse: float) -> float:
    return float("inf") if mse <= 0 else float(10.0 * math.log10(255.0**2 / mse))


def squared_error_sum(a: np.ndarray, b: np.ndarray) -> float:
    d = (a.astype(np.float64) - b.astype(np.float64)).ravel()
    return float(np.dot(d, d))


def ssim_frame(a: np.ndarray, b: np.ndarray) -> float:
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    x = a.astype(np.float32)
    y = b.astype(np.float32)

    def blur(im: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(im, (11, 11), 1.5)

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(s.mean())


def thumbnail(frame: np.ndarray, size: tuple[int, int] = THUMB_SIZE) -> np.ndarray:
    h, w = frame.shape[:2]
    small = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def blur(frame: np.ndarray, sigma: float = BLUR_SIGMA) -> np.ndarray:
    return cv2.GaussianBlur(frame, (0, 0), sigma)


def histogram(frames: np.ndarray) -> np.ndarray:
    """Normalised 512-bin joint RGB histogram of one frame or of all frames together."""
    f = _frames(frames)
    q = (f >> (8 - int(math.log2(HIST_BINS)))).astype(np.int32)
    codes = (q[..., 0] * HIST_BINS + q[..., 1]) * HIST_BINS + q[..., 2]
    h = np.bincount(codes.ravel(), minlength=HIST_BINS**3).astype(np.float64)
    return h / max(h.sum(), 1.0)


def bhattacharyya(p: np.ndarray, q: np.ndarray) -> float:
    """Bhattacharyya distance as OpenCV's HISTCMP_BHATTACHARYYA: sqrt(1 - BC) for normalised histograms."""
    bc = float(np.sum(np.sqrt(np.asarray(p, np.float64) * np.asarray(q, np.float64))))
    return math.sqrt(max(0.0, 1.0 - min(bc, 1.0)))


@dataclass
class Score:
    """Running PSNR/SSIM of one candidate over many batches."""

    se: float = 0.0
    values: int = 0
    ssim_sum: float = 0.0
    frames: int = 0

    def add(self, reference: np.ndarray, candidate: np.ndarray) -> None:
        ref, cand = _frames(reference), _frames(candidate)
        self.se += squared_error_sum(ref, cand)
        self.values += ref.size
        self.ssim_sum += sum(ssim_frame(r, c) for r, c in zip(ref, cand, strict=True))
        self.frames += len(ref)

    @property
    def psnr(self) -> float:
        return psnr(self.se / max(self.values, 1))

    @property
    def ssim(self) -> float:
        return self.ssim_sum / max(self.frames, 1)


@dataclass
class Palette:
    """Mean histogram distance of inputs and of outputs to a reference (training) histogram."""

    reference: np.ndarray
    inputs: list[float] = field(default_factory=list)
    outputs: list[float] = field(default_factory=list)

    def add(self, inputs: np.ndarray, outputs: np.ndarray) -> None:
        for i, o in zip(_frames(inputs), _frames(outputs), strict=True):
            self.inputs.append(bhattacharyya(histogram(i), self.reference))
            self.outputs.append(bhattacharyya(histogram(o), self.reference))

    def summary(self) -> dict:
        di, do = float(np.mean(self.inputs)), float(np.mean(self.outputs))
        return {"inputs_to_training": di, "outputs_to_training": do, "transfer": do < di}


def motion(frames: np.ndarray) -> float:
    """Mean absolute frame-to-frame change in grey levels (0-255): does a sequence move?"""
    f = _frames(frames).astype(np.float32).mean(axis=-1)
    return float(np.abs(np.diff(f, axis=0)).mean()) if len(f) > 1 else 0.0


def compare(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """PSNR and SSIM of one batch of frames (a convenience for training's evaluations and tests)."""
    s = Score()
    s.add(reference, candidate)
    return {"psnr": s.psnr, "ssim": s.ssim}


def baselines(reference: np.ndarray) -> dict[str, np.ndarray]:
    f = _frames(reference)
    return {"thumbnail 16x9": np.stack([thumbnail(x) for x in f]),
            f"gaussian blur sigma {BLUR_SIGMA:g}": np.stack([blur(x) for x in f])}
