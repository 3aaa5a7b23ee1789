"""Latent effects, applied between encode and decode: memory, noise with drift, smoothing, freeze, cues.

Memory first: amount m blends the input's mean toward what the film remembers nearest to it
(autoencoded.live.control.memory), (1 - m) mu + m r; every effect after it plays on that latent, so noise
dreams around the remembered frame, freeze holds it and a cue stores it.

Noise amount 0 decodes the mean (the film's render mode); amount 1 adds `noise_max` x the model's noise
scale x sigma x eps to the learned entries (autoencoded.posterior: the scale training sampled at its top, so
every amount is one the decoder learned), where sigma is the encoder's own uncertainty for this frame and
eps an evolving unit Gaussian pattern. Entries computed from the input (a layout) are never noised.
The pattern evolves as eps <- sqrt(1 - d^2) eps + d n, so its variance stays 1 for any drift d.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from autoencoded.live.control.memory import Recall
from autoencoded.live.control.params import N_CUES, Params
from autoencoded.posterior import LatentPlan, Posterior


@dataclass(frozen=True)
class Effect:
    """One latent effect: when it is on for a frame's Params, and what it does to that frame's latent.

    `apply(fx, z, frame_in, p)` gets the latent so far and returns the new one; `idle(fx)` runs on frames
    where the effect is off (to drop state such as a frozen latent)."""

    name: str
    active: Callable[[Params], bool]
    apply: Callable[[LatentFX, np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray], Params], np.ndarray]
    idle: Callable[[LatentFX], None] = lambda fx: None


class LatentFX:
    """The latent effects of one stream, in EFFECTS order, with their state across frames (the remembered
    latent, the noise pattern, the previous and the frozen latent, the stored cues).

    The memory effect recalls from the bank named by `use_memory` (none: it does nothing); the noise plays
    the entries `plan` names as learned, at its scale (every entry at scale 1 without one)."""

    def __init__(self, z_dim: int, seed: int = 0, plan: LatentPlan | None = None) -> None:
        self.z_dim = z_dim
        self.plan = plan if plan is not None and plan.learned <= z_dim else LatentPlan(z_dim)
        self.recall: Recall | None = None
        self._seed = seed
        self._rng = np.random.default_rng(seed)
        self._eps = self._rng.standard_normal(z_dim).astype(np.float32)
        self._prev: np.ndarray | None = None
        self._frozen: np.ndarray | None = None
        self.cues: list[np.ndarray | None] = [None] * N_CUES

    @property
    def seed(self) -> int:
        return self._seed

    @staticmethod
    def is_identity(p: Params) -> bool:
        """Whether no effect is on for these Params: the latent goes to the decoder as the encoder gave it
        (so the engine may run its fused encode->decode graph). Read from EFFECTS: an effect cannot be
        skipped by forgetting to name it here."""
        return not any(e.active(p) for e in EFFECTS)

    def use_memory(self, bank) -> None:
        """Recall from `bank` (an engine's memory, a MemoryBank or None) from now on; the same bank again
        keeps what is remembered. A bank of another latent size than this stream's is not used."""
        if (self.recall.bank if self.recall is not None else None) is bank:
            return
        self.recall = Recall(bank) if bank is not None and bank.z_dim == self.z_dim else None

    def reset(self) -> None:
        """Forget temporal state (after a model swap with another latent size, say)."""
        self._prev = None
        self._frozen = None
        if self.recall is not None:
            self.recall.reset()

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
        frame_in = (mu, log_sigma, self._next_eps(p))  # the pattern evolves on every frame, used or not
        z = mu
        for effect in EFFECTS:
            if effect.active(p):
                z = effect.apply(self, z, frame_in, p)
            else:
                effect.idle(self)
        z = np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)
        self._prev = z
        return z


def _memory(fx: LatentFX, z, frame_in, p: Params) -> np.ndarray:
    if fx.recall is None:
        return z
    remembered = fx.recall(frame_in[0])  # looked up from what the model sees, the input's own mean
    if p.memory >= 1.0:
        return remembered
    m = np.float32(p.memory)
    return (1 - m) * z + m * remembered


def _noise(fx: LatentFX, z, frame_in, p: Params) -> np.ndarray:
    mu, log_sigma, eps = frame_in
    return Posterior(z, log_sigma, fx.plan).sample(eps, np.float32(p.noise * p.noise_max))


def _smooth(fx: LatentFX, z, frame_in, p: Params) -> np.ndarray:
    if fx._prev is None:
        return z
    a = np.float32(min(p.smooth, 0.99))
    return a * fx._prev + (1 - a) * z


def _freeze(fx: LatentFX, z, frame_in, p: Params) -> np.ndarray:
    if fx._frozen is None:
        fx._frozen = (fx._prev if fx._prev is not None else z).copy()
    return fx._frozen


def _unfreeze(fx: LatentFX) -> None:
    fx._frozen = None


def _store_cues(fx: LatentFX, z, frame_in, p: Params) -> np.ndarray:
    for slot in p.cue_store:
        fx.cues[slot] = z.copy()
    return z


def _recall_cue(fx: LatentFX, z, frame_in, p: Params) -> np.ndarray:
    cue = fx.cues[p.cue_recall] if p.cue_recall < N_CUES else None
    if cue is None or p.cue_mix <= 0:
        return z
    m = np.float32(p.cue_mix)
    return (1 - m) * z + m * cue


# every latent effect, in the order they apply; a new effect is one entry here (with its control in
# autoencoded.live.control.params.CONTROLS)
EFFECTS: tuple[Effect, ...] = (
    Effect("memory", lambda p: p.memory > 0, _memory),
    Effect("noise", lambda p: p.noise > 0, _noise),
    Effect("smooth", lambda p: p.smooth > 0, _smooth),
    Effect("freeze", lambda p: bool(p.freeze), _freeze, _unfreeze),
    Effect("cue/store", lambda p: bool(p.cue_store), _store_cues),
    Effect("cue/recall", lambda p: p.cue_recall >= 0, _recall_cue),
)

