"""BatchNorm's running statistics, held for a block: the trainer freezes them for the prior-sample pass,
the run's evaluation turns them into a plain average to recalibrate them (training/run_evaluation.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn


@contextlib.contextmanager
def bn_momentum(modules: list[nn.Module], momentum: float | None) -> Iterator[list[nn.Module]]:
    """Every BatchNorm layer in `modules` at `momentum` for the block (0 leaves the running statistics as
    they are, None makes them a cumulative average), each layer's own momentum restored after. Yields the
    layers."""
    layers = [m for module in modules for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in layers]
    for m in layers:
        m.momentum = momentum
    try:
        yield layers
    finally:
        for m, mom in zip(layers, saved, strict=True):
            m.momentum = mom
