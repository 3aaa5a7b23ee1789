"""An exponential moving average of network weights (Polyak averaging), for evaluation and export.

A pixel-led autoencoder trained with a high learning rate on a CPU budget jitters from step to step; the
average of its recent weights reconstructs better than any single step's. Training itself always continues from the live weights; checkpoints carry both, the average under
the `ema.` prefix, and `autoencoder_from_state` prefers it.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn


class WeightAverage:
    PREFIX = "ema."

    def __init__(self, nets: dict[str, nn.Module], decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay {decay}: must be between 0 and 1")
        self.decay = decay
        self.params = {k: [p.detach().clone() for p in net.parameters()] for k, net in nets.items()}

    def decay_at(self, step: int) -> float:
        # a short run's first steps would otherwise be averaged with the random initialisation
        return min(self.decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, nets: dict[str, nn.Module], step: int) -> None:
        weight = 1.0 - self.decay_at(step)
        for k, net in nets.items():
            for avg, p in zip(self.params[k], net.parameters(), strict=True):
                avg.lerp_(p.detach(), weight)

    @contextlib.contextmanager
    def swapped_in(self, nets: dict[str, nn.Module]):
        """The averaged weights in `nets` for the duration (buffers such as BatchNorm statistics stay the
        nets' own, for the caller to recalibrate); the live weights and buffers come back afterwards."""
        saved = {k: {n: t.detach().clone() for n, t in net.state_dict().items()} for k, net in nets.items()}
        with torch.no_grad():
            for k, net in nets.items():
                for p, avg in zip(net.parameters(), self.params[k], strict=True):
                    p.copy_(avg)
        try:
            yield
        finally:
            for k, net in nets.items():
                net.load_state_dict(saved[k])

    @staticmethod
    def tensors(nets: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
        """The nets' current state (call inside `swapped_in`, after recalibration) as prefixed tensors."""
        return {f"{WeightAverage.PREFIX}{k}.{n}": t.detach().clone() for k, net in nets.items()
                for n, t in net.state_dict().items()}

    def load(self, tensors: dict[str, torch.Tensor], nets: dict[str, nn.Module]) -> None:
        """Restore the average from a checkpoint's prefixed tensors (the live weights where absent)."""
        for k, net in nets.items():
            self.params[k] = [tensors.get(f"{self.PREFIX}{k}.{n}", p).detach().clone().to(p.device)
                              for n, p in net.named_parameters()]
