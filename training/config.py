"""TrainConfig: every knob of a training run, resolved once and saved to RUN/config.json.

Defaults differ per architecture (see `arch_defaults`):
- broad2016 follows the film: Adam 2e-4, beta1 0.5, batch 12, gamma 2.5, similarity over all four
  discriminator layers, no pixel term.
- lite is tuned to learn recognisable (hazy) reconstructions within minutes on a 2-core CPU: batch 8 and
  Adam 5e-4 (beta1 0.5) for many updates per second; a pixel L1 term (weight 1) that anchors colour and
  layout while the discriminator's features are still random; the similarity at 0.1 for both encoder and
  decoder (early discriminator features move fast and drown the pixel signal); KL weight 0.02 (losses are
  means over pixels, features and latent dimensions, so a unit KL weight pins z to the prior and nothing
  is learned in the first hundreds of steps); the decoder's GAN term at 0.02 so the noisy early
  discriminator cannot dominate. --pixel-weight 0 --sim-weight 1 --gamma 2.5 --kl-weight 1 --gan-weight 1
  is the pure Larsen/Broad objective.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

NOISE_SCHEDULES = ("linear", "cosine", "step")


@dataclass
class TrainConfig:
    dataset: str = ""
    out: str = ""
    arch: str = "lite"
    width: int = 0
    height: int = 0
    z_dim: int = 0  # 0 = the architecture's default
    model_overrides: dict = field(default_factory=dict)  # extra ModelConfig fields (tests use tiny nets)
    steps: int = 0  # total steps; 0 = derive from epochs
    epochs: float = 0.0
    batch: int = 0  # global batch (all processes together)
    accum: int = 1  # micro-batches per process per step (gradients averaged, like extra processes)
    lr: float = 0.0  # one lr for the three Adam optimizers (encoder, decoder, discriminator)
    beta1: float = 0.5
    beta2: float = 0.999
    gamma: float = 0.0  # decoder weight of the learned similarity
    kl_weight: float = -1.0  # -1 = arch default
    sim_weight: float = -1.0  # encoder weight of the similarity (Larsen: 1); -1 = arch default
    pixel_weight: float = -1.0  # -1 = arch default
    gan_weight: float = -1.0  # decoder's GAN term weight; -1 = arch default
    equilibrium: float = 0.68
    margin: float = 0.35
    balance: bool = True  # the equilibrium/margin rule
    clip_grad: float = 0.0  # max grad norm per network; 0 = off
    noise_start: float = 1.0
    noise_end: float = 0.1
    noise_schedule: str = "cosine"
    noise_stages: int = 4  # number of plateaus of the "step" schedule
    sample_every: int = 0  # 0 = arch/size dependent default (set by resolve)
    checkpoint_every: int = 0
    log_every: int = 10
    keep: int = 3
    seed: int = 0
    device: str = "auto"
    compile: bool = False
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    allow_partial: bool = False
    # collapse guard
    guard: bool = True
    sat_eps: float = 1e-3  # discriminator loss below this ...
    sat_steps: int = 50  # ... for this many steps in a row = saturated
    spike_factor: float = 10.0  # a loss above factor x running median = spike
    spike_window: int = 50
    spike_warmup: int = 20
    diversity_ratio: float = 0.2  # fixed-batch diversity below ratio x best seen = collapse
    rollback_lr_factor: float = 0.5
    max_rollbacks: int = 5
    sample_count: int = 8  # images per row in sample grids (also the fixed guard batch)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown training config keys: {', '.join(sorted(unknown))}")
        return cls(**d)

    def save(self, path: str | Path) -> None:
        from autoencoded.training.weights import atomic_write_bytes

        atomic_write_bytes(path, (self.to_json() + "\n").encode())


def arch_defaults(arch: str) -> dict:
    if arch == "broad2016":
        return dict(batch=12, lr=2e-4, gamma=2.5, pixel_weight=0.0, gan_weight=1.0, sim_weight=1.0,
                    kl_weight=1.0)
    return dict(batch=8, lr=5e-4, gamma=0.1, pixel_weight=1.0, gan_weight=0.02, sim_weight=0.1, kl_weight=0.02)


def resolve(cfg: TrainConfig) -> TrainConfig:
    """Fill arch-dependent defaults (fields left at 0 / -1)."""
    d = arch_defaults(cfg.arch)
    out = dataclasses.replace(cfg)
    for key in ("batch", "lr", "gamma"):
        if not getattr(out, key):
            setattr(out, key, d[key])
    for key in ("pixel_weight", "gan_weight", "sim_weight", "kl_weight"):
        if getattr(out, key) < 0:
            setattr(out, key, d[key])
    if not out.checkpoint_every:
        out.checkpoint_every = 100
    if not out.sample_every:
        out.sample_every = out.checkpoint_every
    return out
