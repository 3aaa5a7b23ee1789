"""Latent effects, applied between encode and decode: noise with drift, smoothing, freeze, cues.

Noise amount 0 decodes the mean (the film's render mode); amount 1 adds `noise_max` x sigma x eps,
where sigma is the encoder's own uncertainty for this frame and eps an evolving unit Gaussian pattern.
The pattern evolves as eps <- sqrt(1 - d^2) eps + d n, so its variance stays 1 for any drift d.
"""

from __future__ import annotations

import numpy as np

from autoencoded.live.control.params import N_CUES, Params


class LatentFX:
    def __init__(self, z_dim: int, seed: int = 0) -> None:
        self.z_dim = z_dim
        self._seed = seed
        self._rng = np.random.default_rng(seed)
        self._eps = self._rng.standard_normal(z_dim).astype(np.float32)
        self._prev: np.ndarray | None = None
        self._frozen: np.ndarray | None = None
        self.cues: list[np.ndarray | None] = [None] * N_CUES

    def reset(self) -> None:
        """Forget temporal state (after a model swap with another latent size, say)."""
        self._prev = None
        self._frozen = None

    def _next_eps(self, p: Params) -> np.ndarray:
        if p.noise_seed != self._seed:
            self._seed = p.noise_seed
            self._rng = np.random.default_rng(p.noise_seed)
            self._eps = self._rng.standard_normal(self.z_dim).astype(np.float32)
            return self._eps
        d = float(p.noise_drift)
        if d > 0:
            fresh = self._rng.standard_normal(self.z_dim).astype(np.float32)
            self._eps = np.sqrt(1.0 - d * d, dtype=np.float32) * self._eps + np.float32(d) * fresh
        return self._eps

    def __call__(self, mu: np.ndarray, log_sigma: np.ndarray, p: Params) -> np.ndarray:
        """(N, z) mean and log-sigma -> (N, z) latent to decode. Rows are consecutive frames."""
        mu = np.asarray(mu, dtype=np.float32)
        if mu.shape[-1] != self.z_dim:
            self.__init__(mu.shape[-1], self._seed)
        # a sick encoder's log-sigma must not turn the noise into Inf (exp(89) overflows float32)
        log_sigma = np.clip(np.nan_to_num(np.asarray(log_sigma, dtype=np.float32), nan=-30.0), -30.0, 10.0)
        out = np.empty_like(mu)
        for i in range(mu.shape[0]):
            out[i] = self._one(mu[i], log_sigma[i], p)
        return out

    def _one(self, mu: np.ndarray, log_sigma: np.ndarray, p: Params) -> np.ndarray:
        z = mu
        eps = self._next_eps(p)
        if p.noise > 0:
            z = mu + np.float32(p.noise * p.noise_max) * np.exp(log_sigma) * eps
        if p.smooth > 0 and self._prev is not None:
            a = np.float32(min(p.smooth, 0.99))
            z = a * self._prev + (1 - a) * z
        if p.freeze:
            if self._frozen is None:
                self._frozen = (self._prev if self._prev is not None else z).copy()
            z = self._frozen
        else:
            self._frozen = None
        for slot in p.cue_store:
            self.cues[slot] = z.copy()
        if 0 <= p.cue_recall < N_CUES and self.cues[p.cue_recall] is not None and p.cue_mix > 0:
            m = np.float32(p.cue_mix)
            z = (1 - m) * z + m * self.cues[p.cue_recall]
        z = np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)
        self._prev = z
        return z


def dry_wet(model_frame: np.ndarray, input_frame: np.ndarray, mix: float) -> np.ndarray:
    """Blend the model's output with the input (same shape, uint8). mix 1 = all model."""
    if mix >= 1.0:
        return model_frame
    if mix <= 0.0:
        return input_frame
    out = model_frame.astype(np.float32) * mix + input_frame.astype(np.float32) * (1.0 - mix)
    return np.rint(out).astype(np.uint8)
