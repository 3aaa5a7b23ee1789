"""The dream figures: what the latent noise knob does to the picture, as live plays it.

Each footage is rendered three times in order, with the live latent effects (autoencoded.live.control.latent,
the default drift and noise/max): at noise 0 (decode the mean), 0.5 and 1. Beside them (autoencoded.metrics):
- change: the mean |difference| from the noise-0 render, 0..255 (the knob must move the picture);
- sharpness at noise 1 against the film's own frames' (a dream is a picture: per-pixel static is sharper
  than any film frame);
- palette: the CIELAB W2 of the noise-1 render to the film's colours (the dream stays the film's);
- warp: the warping error at noise 0.5 along the input's flow, beside noise 0's (it drifts, not boils);
- learned share: how much the output changes when a frame's learned latent entries are swapped for those of
  a frame far from it in the footage (the learned code carries the picture, not raw input beside it).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from autoencoded import metrics
from autoencoded.live.control.latent import LatentFX
from autoencoded.live.control.params import Params
from autoencoded.posterior import LatentPlan

AMOUNTS = (0.5, 1.0)
SWAP_FRAMES = 64  # frames kept (evenly over the footage) for the learned-share swaps


def learned_share(means: np.ndarray, decode: Callable, plan: LatentPlan) -> float:
    """Mean |difference|, 0..255, between decoding each mean and decoding it with the learned entries of the
    mean half the sequence away (rows in footage order, so that is another scene of a film)."""
    swapped = means.copy()
    swapped[:, :plan.learned] = np.roll(means, len(means) // 2, axis=0)[:, :plan.learned]
    return metrics.change(decode(means), decode(swapped))


class DreamTally:
    """Running sums of the dream figures of one footage, batch by batch, in order.

    `encode(frames) -> (mu, log_sigma)` and `decode(z) -> frames` are an engine's (numpy, uint8 frames);
    `expected` is about how many frames will come, which spaces the frames kept for the swaps."""

    def __init__(self, encode: Callable, decode: Callable, plan: LatentPlan, z_dim: int, expected: int,
                 seed: int = 0) -> None:
        self.encode, self.decode, self.plan = encode, decode, plan
        self.fx = {a: LatentFX(z_dim, seed=seed, plan=plan) for a in AMOUNTS}
        self.params = {a: Params(noise=a, noise_seed=seed) for a in AMOUNTS}
        self.changed = dict.fromkeys(AMOUNTS, 0.0)
        self.sharp: list[np.ndarray] = []
        self.sharp_still: list[np.ndarray] = []
        self.lab = metrics.LabGaussian()
        self.warp = metrics.WarpError()
        self.every = max(1, expected // SWAP_FRAMES)
        self.kept: list[np.ndarray] = []
        self.done = 0

    def add(self, frames: np.ndarray, still: np.ndarray | None = None) -> None:
        """One batch; `still` is its noise-0 render when the caller has it already."""
        mu, log_sigma = self.encode(frames)
        still = self.decode(mu) if still is None else still
        renders = {a: self.decode(self.fx[a](mu, log_sigma, self.params[a])) for a in AMOUNTS}
        for a, out in renders.items():
            self.changed[a] += metrics.change(still, out) * len(frames)
        self.sharp.append(metrics.sharpness_frames(renders[1.0]))
        self.sharp_still.append(metrics.sharpness_frames(still))
        self.lab.add(renders[1.0])
        self.warp.add(frames, {"still": still, "noise 0.5": renders[0.5]})
        at = np.arange(self.done, self.done + len(frames))
        self.kept += [mu[i] for i in np.flatnonzero(at % self.every == 0)]
        self.done += len(frames)

    def learned_share(self) -> float | None:
        return learned_share(np.stack(self.kept), self.decode, self.plan) if len(self.kept) > 1 else None

    def figures(self, film_sharpness: float | None, palette=None) -> dict:
        done = max(self.done, 1)
        sharp = float(np.median(np.concatenate(self.sharp))) if self.sharp else 0.0
        still = float(np.median(np.concatenate(self.sharp_still))) if self.sharp_still else 0.0
        return {
            "sharpness_noise_0": still,
            "sharpness_ratio_noise_0": still / film_sharpness if film_sharpness else None,
            "change": {str(a): v / done for a, v in self.changed.items()},
            "sharpness_noise_1": sharp,
            "film_sharpness": film_sharpness,
            "sharpness_ratio": sharp / film_sharpness if film_sharpness else None,
            "palette_w2_noise_1": palette.w2(self.lab) if palette is not None else None,
            "warp_error_noise_0": self.warp.mean("still"),
            "warp_error_noise_05": self.warp.mean("noise 0.5"),
            "learned_share": self.learned_share(),
        }
