"""Picture quality figures shared by `autoencoded eval`, training's evaluations and the recipe benchmark.

All take uint8 RGB frames (N x H x W x 3 or H x W x 3) at the model's size.
- PSNR is of the pooled mean squared error over all frames: a black frame reconstructed exactly would give
  one infinite per-frame PSNR and swamp a mean of PSNRs.
- SSIM is Wang et al. 2004 (11x11 Gaussian window, sigma 1.5) per channel, averaged over channels and frames.
- The two baselines a reconstruction must beat to be worth a model: the 16x9 thumbnail (INTER_AREA down to
  16x9 pixels, INTER_LINEAR back up: the colour layout alone) and a sigma-4 Gaussian blur.
- On footage a model never saw: structure (BT.601 luma correlation at 32x18), the CIELAB Gaussian of the
  pixels and the 2-Wasserstein distance between two such Gaussians (palette: a model takes on its film's
  colours when its outputs are closer to the training frames' Gaussian than its inputs are), Hasler-Suesstrunk
  colourfulness, and the temporal warping error along the input's optical flow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

THUMB_SIZE = (16, 9)
BLUR_SIGMA = 4.0


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


# footage the model never saw: does the output keep the input's composition, take the film's colours, and
# hold still where the input holds still?

STRUCTURE_SIZE = (32, 18)  # width x height of the luma layout compared by `structure`
LAB_STRIDE = 4  # `lab_gaussian` takes every 4th pixel of every 4th row: 1/16 of the pixels, same moments


def luma(frames: np.ndarray) -> np.ndarray:
    """BT.601 luma (0.299 R + 0.587 G + 0.114 B, OpenCV's RGB2GRAY) as float32, N x H x W, 0..255."""
    f = _frames(frames)
    return np.stack([cv2.cvtColor(x.astype(np.float32), cv2.COLOR_RGB2GRAY) for x in f])


def structure_frames(inputs: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """Per frame, the Pearson correlation of input and output BT.601 luma at 32x18 (cv2.INTER_AREA).
    A frame whose input or output luma is constant at that size has no layout to agree with: it scores 0."""
    out = []
    for a, b in zip(luma(inputs), luma(outputs), strict=True):
        x = cv2.resize(a, STRUCTURE_SIZE, interpolation=cv2.INTER_AREA).astype(np.float64).ravel()
        y = cv2.resize(b, STRUCTURE_SIZE, interpolation=cv2.INTER_AREA).astype(np.float64).ravel()
        x -= x.mean()
        y -= y.mean()
        sxx, syy = float(np.dot(x, x)), float(np.dot(y, y))
        # flat below 1e-3 grey levels of spread: float32 resize noise, whose correlation is a random sign
        flat = min(sxx, syy) <= (1e-3) ** 2 * x.size
        out.append(0.0 if flat else float(np.dot(x, y)) / math.sqrt(sxx * syy))
    return np.asarray(out, np.float64)


def structure(inputs: np.ndarray, outputs: np.ndarray) -> float:
    """Mean over frames of `structure_frames`: 1 the output keeps the input's layout of light and dark, 0
    it shows nothing of it, -1 it inverts it."""
    return float(structure_frames(inputs, outputs).mean())


def lab_pixels(frames: np.ndarray, stride: int = LAB_STRIDE) -> np.ndarray:
    """CIELAB of every `stride`-th pixel of every `stride`-th row, K x 3 float64 (L 0..100, a and b about
    -128..127): cv2.cvtColor on float32 RGB scaled to 0..1 (D65, sRGB gamma undone)."""
    f = _frames(frames)[:, ::stride, ::stride]
    lab = [cv2.cvtColor(np.ascontiguousarray(x, dtype=np.float32) / 255.0, cv2.COLOR_RGB2Lab) for x in f]
    return np.concatenate([x.reshape(-1, 3) for x in lab]).astype(np.float64)


@dataclass
class LabGaussian:
    """Running mean and covariance of CIELAB pixels over many batches (sums in float64)."""

    n: int = 0
    total: np.ndarray = field(default_factory=lambda: np.zeros(3))
    outer: np.ndarray = field(default_factory=lambda: np.zeros((3, 3)))

    def add(self, frames: np.ndarray, stride: int = LAB_STRIDE) -> None:
        p = lab_pixels(frames, stride)
        self.n += len(p)
        self.total += p.sum(axis=0)
        self.outer += p.T @ p

    @property
    def mean(self) -> np.ndarray:
        return self.total / max(self.n, 1)

    @property
    def cov(self) -> np.ndarray:
        m = self.mean
        c = self.outer / max(self.n, 1) - np.outer(m, m)  # population covariance: n is tens of thousands
        return (c + c.T) / 2


def lab_gaussian(frames: np.ndarray, stride: int = LAB_STRIDE) -> tuple[np.ndarray, np.ndarray]:
    """(mean[3], cov[3x3]) of the CIELAB pixels of all `frames` pooled (see `lab_pixels`)."""
    g = LabGaussian()
    g.add(frames, stride)
    return g.mean, g.cov


def _sqrt_psd(c: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((c + c.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def w2_gaussian(m1, c1, m2, c2) -> float:
    """2-Wasserstein distance between N(m1, c1) and N(m2, c2) (Dowson & Landau 1982), in the units of the
    means (CIELAB here): sqrt(|m1 - m2|^2 + tr(c1 + c2 - 2 (c2^1/2 c1 c2^1/2)^1/2)). Covariances are
    symmetric PSD, so the matrix square roots come from eigen-decompositions."""
    m1, m2 = np.asarray(m1, np.float64), np.asarray(m2, np.float64)
    c1, c2 = np.asarray(c1, np.float64), np.asarray(c2, np.float64)
    s2 = _sqrt_psd(c2)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((s2 @ c1 @ s2 + (s2 @ c1 @ s2).T) / 2), 0.0, None)).sum()
    d2 = float(np.dot(m1 - m2, m1 - m2) + np.trace(c1) + np.trace(c2) - 2.0 * cross)
    return math.sqrt(max(d2, 0.0))


def colourfulness_frames(frames: np.ndarray) -> np.ndarray:
    """Per frame, Hasler & Suesstrunk 2003's M on 0..255 RGB: rg = R - G, yb = (R + G)/2 - B,
    M = sqrt(std(rg)^2 + std(yb)^2) + 0.3 sqrt(mean(rg)^2 + mean(yb)^2). 0 is grey; about 33 'moderately',
    59 'quite', 82 'highly colourful' on their scale."""
    f = _frames(frames).astype(np.float64)
    rg = f[..., 0] - f[..., 1]
    yb = 0.5 * (f[..., 0] + f[..., 1]) - f[..., 2]
    axes = (1, 2)
    spread = np.sqrt(rg.var(axis=axes) + yb.var(axis=axes))
    offset = np.sqrt(rg.mean(axis=axes) ** 2 + yb.mean(axis=axes) ** 2)
    return spread + 0.3 * offset


def colourfulness(frames: np.ndarray) -> float:
    """Mean over frames of `colourfulness_frames`."""
    return float(colourfulness_frames(frames).mean())


def input_flow(prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
    """Dense optical flow from RGB frame `prev` to `nxt` (Farneback on BT.601 grey): prev(y, x) shows what
    nxt shows at (y + flow[..., 1], x + flow[..., 0])."""
    a = cv2.cvtColor(prev, cv2.COLOR_RGB2GRAY)
    b = cv2.cvtColor(nxt, cv2.COLOR_RGB2GRAY)
    return cv2.calcOpticalFlowFarneback(a, b, None, pyr_scale=0.5, levels=3, winsize=15, iterations=3,
                                        poly_n=5, poly_sigma=1.2, flags=0)


def warped_difference(flow: np.ndarray, out_t: np.ndarray, out_next: np.ndarray) -> float:
    """Mean absolute difference (0..255, over the RGB channels of the pixels whose flow stays inside the frame)
    between output frame t and output frame t+1 warped onto t along the input's flow."""
    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    mx, my = gx + flow[..., 0], gy + flow[..., 1]
    warped = cv2.remap(out_next, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inside = (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
    if not inside.any():
        return 0.0
    d = np.abs(warped.astype(np.float32) - out_t.astype(np.float32))[inside]
    return float(d.mean())


@dataclass
class WarpError:
    """Running temporal warping error of one or more outputs of the same inputs, across batch boundaries:
    each pair (t, t+1) of consecutive frames, the last of one batch and the first of the next included,
    gets the input's flow once, and every output is scored along it. The inputs themselves warped by their
    own flow give the floor that the flow's own mistakes set (`add` scores them as "inputs")."""

    sums: dict[str, float] = field(default_factory=dict)
    pairs: int = 0
    _last: dict[str, np.ndarray] = field(default_factory=dict)

    def add(self, inputs: np.ndarray, outputs: dict[str, np.ndarray]) -> None:
        seqs = {"inputs": _frames(inputs), **{k: _frames(v) for k, v in outputs.items()}}
        joined = {k: np.concatenate([self._last[k], v]) if self._last else v for k, v in seqs.items()}
        frames = joined["inputs"]
        for t in range(len(frames) - 1):
            flow = input_flow(frames[t], frames[t + 1])
            for k, seq in joined.items():
                self.sums[k] = self.sums.get(k, 0.0) + warped_difference(flow, seq[t], seq[t + 1])
            self.pairs += 1
        self._last = {k: v[-1:] for k, v in seqs.items()}

    def mean(self, name: str) -> float | None:
        return self.sums[name] / self.pairs if self.pairs else None


def warp_error(inputs: np.ndarray, outputs: np.ndarray) -> float | None:
    """Temporal warping error of `outputs` (after Lai et al. 2018's E_warp, as a mean absolute error over
    RGB channels in 0..255, not RMSE, and without an occlusion mask): Farneback flow computed on the input frames t -> t+1, the output's frame t+1
    warped onto t with cv2.remap, averaged over pairs. None for fewer than two frames."""
    w = WarpError()
    w.add(inputs, {"outputs": outputs})
    return w.mean("outputs")


# the dream: what latent noise does to the picture. It must change it (change), stay a picture rather than
# static (sharpness no higher than the film's own frames), keep the film's colours (the palette's W2) and
# drift rather than boil (the warping error at noise beside that at noise 0)

def sharpness_frames(frames: np.ndarray) -> np.ndarray:
    """Per frame, the variance of the Laplacian of its BT.601 luma (0..255 scale): high for edges and
    per-pixel static alike, low for a blur."""
    return np.asarray([float(cv2.Laplacian(y, cv2.CV_32F).var()) for y in luma(frames)], np.float64)


def sharpness(frames: np.ndarray) -> float:
    """Median over frames of `sharpness_frames` (a cut to a flat frame does not move it)."""
    return float(np.median(sharpness_frames(frames)))


def change(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two renders of the same frames, 0..255 over every pixel and channel."""
    return float(np.abs(_frames(a).astype(np.float32) - _frames(b).astype(np.float32)).mean())
