"""Latent-noise annealing: the prior std goes from noise_start to noise_end over the run.

The same value is the std of eps when sampling z = mu + sigma * eps, the std of the prior that the KL term
pulls the posterior toward, and the std of the prior samples shown to the discriminator.
"""

from __future__ import annotations

import math

KINDS = ("linear", "cosine", "step")


def noise_at(step: int, total: int, start: float, end: float, kind: str = "cosine", stages: int = 4) -> float:
    """Noise level (prior std) at `step` of `total` steps."""
    if kind not in KINDS:
        raise ValueError(f"unknown noise schedule {kind!r} (choose from {', '.join(KINDS)})")
    if total <= 1:
        return float(end if step > 0 else start)
    t = min(max(step / (total - 1), 0.0), 1.0)
    if kind == "linear":
        f = t
    elif kind == "cosine":
        f = 0.5 - 0.5 * math.cos(math.pi * t)
    else:  # step: `stages` plateaus, the first at start and the last at end
        n = max(int(stages), 2)
        f = min(int(t * n), n - 1) / (n - 1)
    return float(start + (end - start) * f)


def lr_at(base: float, scale: float = 1.0, step: int = 0, total: int = 1, schedule: str = "constant",
          min_factor: float = 0.05) -> float:
    """Learning rate at `step`: the base lr, decayed by `schedule` ("constant", or "cosine" from base to
    min_factor x base over the run: a short CPU run ends on small steps that settle the weights), times
    the collapse guard's cumulative reduction `scale`."""
    if schedule == "constant" or total <= 1:
        f = 1.0
    elif schedule == "cosine":
        t = min(max(step / (total - 1), 0.0), 1.0)
        f = min_factor + (1.0 - min_factor) * (0.5 + 0.5 * math.cos(math.pi * t))
    else:
        raise ValueError(f"unknown lr schedule {schedule!r} (choose constant or cosine)")
    return float(base * f * scale)
