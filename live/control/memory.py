"""What the film remembers nearest to the input: the latent the `memory` control blends toward.

The input's latent mean is looked up in the pack's memory bank (autoencoded.live.engines.memory_bank): the
K nearest of the film's own latents (by direction from the film's centre), weighted by

    w_i = exp(-(d_i^2 / d_1^2 - 1) / SHARPNESS) x (d_{K+1}^2 - d_i^2)

(d_1 the nearest distance). The first factor is relative: an input close to one frame of the film gets that
frame, an input far from every frame (foreign footage) a blend of the few about as near. The second makes the
weight of a neighbour fall to 0 as it is about to leave the K nearest, so the remembered latent moves
continuously with the input instead of jumping when the neighbour set changes.

Hysteresis: the remembered latent is looked up again only when the input has moved more than RADIUS x the
bank's step (the median distance between consecutive frames of the film) from where it was last looked up.
An input that barely moves (sensor noise, compression flicker) keeps the same remembered latent, bit for
bit; a still input gives a still memory.
"""

from __future__ import annotations

import numpy as np

K = 4  # neighbours blended
SHARPNESS = 0.05  # relative squared distance at which a neighbour's weight falls by e
RADIUS = 0.5  # how far the input moves (in steps of the film) before the memory looks again


def weights(d2: np.ndarray, k: int = K) -> np.ndarray:
    """Weights (summing to 1) of the first min(k, n) of n ascending squared distances (see module doc)."""
    d2 = np.asarray(d2, dtype=np.float64)
    n = min(k, len(d2))
    nearest = max(float(d2[0]), 1e-12)
    w = np.exp(-(d2[:n] / nearest - 1.0) / SHARPNESS)
    if len(d2) > n:
        w *= np.maximum(d2[n] - d2[:n], 0.0)
    total = float(w.sum())
    return w / total if total > 0 else np.full(n, 1.0 / n)  # k+1 neighbours at one distance: all alike


class Recall:
    """The remembered latent of one stream: `recall(mu)` for each frame's input mean, in order."""

    def __init__(self, bank) -> None:
        self.bank = bank
        self.radius = float(RADIUS * bank.step)
        self.lookups = 0
        self.reset()

    def reset(self) -> None:
        self._anchor: np.ndarray | None = None
        self._remembered: np.ndarray | None = None

    def __call__(self, mu: np.ndarray) -> np.ndarray:
        mu = np.asarray(mu, dtype=np.float32)
        if self._anchor is not None and float(np.linalg.norm(mu - self._anchor)) <= self.radius:
            return self._remembered
        d2, idx = self.bank.search(mu, K + 1)
        w = weights(d2)
        self._remembered = (w[:, None] * self.bank.latents[idx[:len(w)]].astype(np.float64)).sum(0).astype(np.float32)
        self._anchor = mu.copy()
        self.lookups += 1
        return self._remembered
