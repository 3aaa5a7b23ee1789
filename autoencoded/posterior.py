"""The encoder's posterior over the latent: what training samples, export records and live noise plays.

A Posterior holds the encoder's (mean, log_sigma), each N x latent_dim, and which of those entries are
learned: the first `learned` ones. Entries after them are computed from the input (the layout, see
training/model.py): they have no sigma and no KL, and no noise ever moves them. Its `scale` is the noise's
standard deviation, in units of the encoder's sigma, at live noise amount 1 with noise/max 1: the top of
what training sampled, so the decoder has learned what every amount a VJ plays means ("train on the noise
you play").

It is written once for numpy arrays (the live loop, with no torch on the ONNX Runtime path) and torch
tensors (training, export), so the noise's formula and its scale are defined here and nowhere else.
model.json records `learned` and `scale` as its "latent" entry (`record` / `from_record`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _exp(a):
    return a.exp() if hasattr(a, "exp") else np.exp(a)


def _float(a):
    return a.float() if hasattr(a, "float") and not isinstance(a, np.ndarray) else np.asarray(a, np.float32)


@dataclass(frozen=True)
class LatentPlan:
    """Which latent entries are learned and at what scale live noise plays them (model.json's "latent")."""

    learned: int  # the leading entries that are learned (sampled in training, noised live)
    scale: float = 1.0  # the noise's std at amount 1, in units of the encoder's sigma
    shape: tuple[int, ...] | None = None  # the learned code as a map (channels, rows, cols), None for a vector

    def record(self) -> dict:
        return {"learned": self.learned, "noise_scale": self.scale,
                "shape": list(self.shape) if self.shape else None}

    @classmethod
    def from_record(cls, record: object, latent_dim: int) -> LatentPlan:
        """model.json's "latent" entry; a pack from before it noised every entry at scale 1. ValueError when
        it is malformed (a pack reader turns that into its one line)."""
        if record is None:
            return cls(latent_dim, 1.0)
        if not isinstance(record, dict):
            raise ValueError("'latent' must be an object")
        learned, scale = record.get("learned"), record.get("noise_scale", 1.0)
        if isinstance(learned, bool) or not isinstance(learned, int) or not 0 <= learned <= latent_dim:
            raise ValueError(f"'latent.learned' must be an integer from 0 to z_dim ({latent_dim})")
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 <= scale <= 100:
            raise ValueError("'latent.noise_scale' must be a number from 0 to 100")
        shape = record.get("shape")
        if shape is not None:
            if (not isinstance(shape, list) or not all(isinstance(s, int) and s > 0 for s in shape)
                    or int(np.prod(shape)) != learned):
                raise ValueError("'latent.shape' must be positive integers whose product is latent.learned")
            shape = tuple(shape)
        return cls(learned, float(scale), shape)


@dataclass
class Posterior:
    """N(mean, diag(exp(log_sigma))^2) over the learned entries; the computed entries are the mean itself."""

    mean: object  # (N, latent_dim) numpy array or torch tensor
    log_sigma: object  # same shape; 0 for the computed entries
    plan: LatentPlan
    pre_mean: object = None  # the learned mean before its bound (training's saturation penalty reads it)

    def mode(self):
        """What decoding the mean decodes: noise amount 0."""
        return self.mean

    def noise(self, eps, amount=1.0):
        """The displacement that `amount` (a number, or one per row as an (N, 1) array) of live noise adds:
        amount x scale x sigma x eps on the learned entries, 0 on the computed ones."""
        d = (amount * self.plan.scale) * _exp(self.log_sigma) * eps
        width = self.mean.shape[-1]
        if self.plan.learned < width:
            mask = np.zeros(width, np.float32)
            mask[:self.plan.learned] = 1
            d = d * (mask if isinstance(d, np.ndarray) else d.new_tensor(mask))
        return d

    def sample(self, eps, amount=1.0):
        """mean + noise(eps, amount): the latent that `amount` of noise decodes."""
        return self.mean + self.noise(eps, amount)

    def learned(self):
        """(mean, log_sigma) of the learned entries alone."""
        n = self.plan.learned
        return self.mean[:, :n], self.log_sigma[:, :n]

    def kl(self, prior_std: float = 1.0, prior_scaled: bool = False):
        """KL(q || N(0, prior_std^2)) of the learned entries, averaged over entries and rows, with q's sigma
        times prior_std (z = mean + sigma x eps, eps ~ N(0, prior_std^2): the film's annealed prior). Per
        entry -log sigma + (sigma^2 - 1) / 2 + mean^2 / (2 prior_std^2); `prior_scaled` multiplies it by
        prior_std^2, so its pull on the mean holds as the prior narrows (training/losses.py says why)."""
        n2 = max(float(prior_std), 1e-4) ** 2
        mu, log_sigma = (_float(a) for a in self.learned())
        kl = (-log_sigma + 0.5 * (_exp(2 * log_sigma) - 1.0) + mu * mu / (2 * n2)).mean()
        return kl * n2 if prior_scaled else kl
