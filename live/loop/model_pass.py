"""Frames through the model, shared by live (one frame at a time) and render (in batches): encode, the latent
effects (autoencoded.live.control.latent), decode; the engine's fused graph when no effect is on. Bad output
from the engine is an EngineFault, which the callers isolate to those frames."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from autoencoded.live.control.latent import LatentFX
from autoencoded.live.control.params import Params
from autoencoded.live.engines.base import Engine, EngineFault


def encode_effects_decode(engine: Engine, fx: LatentFX, frames: np.ndarray,
                          p: Params | Sequence[Params]) -> np.ndarray:
    """uint8 (N,h,w,3) at the model size -> the model's frames (N,h,w,3); raises EngineFault on bad output.

    p: the controls for every frame, or one Params per frame (a modulated render)."""
    n = frames.shape[0]
    if all(LatentFX.is_identity(q) for q in ([p] if isinstance(p, Params) else p)):
        out = engine.reconstruct(frames)
    else:
        mu, log_sigma = engine.encode(frames)
        mu = np.asarray(mu, dtype=np.float32)
        log_sigma = np.asarray(log_sigma, dtype=np.float32)
        if mu.shape != (n, engine.z_dim) or log_sigma.shape != mu.shape:
            raise EngineFault(f"encoder returned latents of shape {mu.shape}, expected {(n, engine.z_dim)}")
        if not (np.isfinite(mu).all() and np.isfinite(log_sigma).all()):
            raise EngineFault("encoder returned NaN/Inf latents")
        fx.use_memory(getattr(engine, "memory", None))  # the bank of the engine playing now (live and render)
        if isinstance(p, Params):
            z = fx(mu, log_sigma, p)
        else:  # the effects run row by row anyway (rows are consecutive frames)
            z = np.concatenate([fx(mu[i:i + 1], log_sigma[i:i + 1], q) for i, q in enumerate(p)])
        out = engine.decode(z)
    out = np.asarray(out)
    if out.dtype != np.uint8 or out.shape != frames.shape:
        raise EngineFault(f"model returned {out.dtype} {out.shape}, expected uint8 {frames.shape}")
    return out
