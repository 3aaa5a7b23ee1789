"""TrainConfig: every knob of a training run, resolved once and saved to RUN/config.json.

A field left at None takes its architecture's default (training/archs.py: TRAINING with what the entry
changes), so 0 is a value like any other (`--gamma 0` turns the decoder's similarity off); a loss term's
knob that neither names takes the term's own default (training/losses.py). `resolve` fills them; an unknown architecture is an error.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from autoencoded.documents import check_fields
from autoencoded.errors import UserError
from autoencoded.training import archs, losses
from autoencoded.training.model import ModelConfig

NOISE_SCHEDULES = ("linear", "cosine", "step")
LR_SCHEDULES = ("constant", "cosine")
MODEL_FIELDS = {"z_dim": int, "layout": bool, "layout_scale": int}  # run settings that are ModelConfig fields


@dataclass
class _TrainFields:
    dataset: str = ""
    out: str = ""
    arch: str = "lite"
    width: int = 0
    height: int = 0
    z_dim: int | None = None
    layout: bool | None = None  # the input's luma grid in the latent (training/model.py)
    layout_scale: int | None = None  # that grid this many times finer than the decoder's bottom one
    model_overrides: dict = field(default_factory=dict)  # extra ModelConfig fields (tests use tiny nets)
    steps: int = 0  # total steps; 0 = derive from epochs
    epochs: float = 0.0
    batch: int | None = None  # global batch (all processes together)
    accum: int = 1  # micro-batches per process per step (gradients averaged, like extra processes)
    lr: float | None = None  # peak lr of the encoder's and decoder's Adam
    lr_dis: float | None = None  # the discriminator's (GANs want it lower than a pixel-led autoencoder's)
    lr_schedule: str | None = None  # "constant", or "cosine" decay to lr_min_factor x lr over the run
    lr_min_factor: float = 0.05
    beta1: float | None = None
    beta2: float = 0.999
    # fraction of the run trained as a pixel-led autoencoder before the discriminator joins (0 = from the
    # first step, as Larsen et al.): the discriminator's three passes a step are skipped until then
    adversarial_start: float | None = None
    # the film through other cameras (training/augment.py): recomposed frames, degraded inputs
    augment: bool | None = None
    augment_plain: float | None = None  # fraction of each batch left as the film's frames are
    augment_degrade: float | None = None  # fraction of the recomposed samples whose input is also degraded
    augment_grey: float | None = None  # fraction of the degraded samples whose input is grey
    ema: float | None = None  # decay of the weights' moving average used for evaluation and export; 0 = off
    equilibrium: float = 0.68
    margin: float = 0.35
    balance: bool = True  # the equilibrium/margin rule
    clip_grad: float = 0.0  # max grad norm per network; 0 = off
    noise_start: float | None = None
    noise_end: float | None = None
    noise_schedule: str = "cosine"
    noise_stages: int = 4  # number of plateaus of the "step" schedule
    # fraction of each batch whose latent noise is the amount live plays, uniform from 0 to 1 of the model's
    # noise_scale, instead of the schedule's prior std: the decoder learns what each amount of the knob means
    dream_share: float | None = None
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
    # the loss terms' knobs (training/losses.py: weights and settings) by field, None = the architecture's
    # default; config.json keeps them flat beside the other fields, as before the terms declared them
    loss: dict = field(default_factory=dict)


losses.reserve((f.name for f in dataclasses.fields(_TrainFields)), "training setting (TrainConfig)")


class TrainConfig(_TrainFields):
    """The run's fields, and a knob of each loss term (training/losses.py) as if it were one: given as a
    keyword (`TrainConfig(gamma=0.0)`), read as an attribute (`cfg.gamma`), saved as a key of its own."""

    def __init__(self, loss: dict | None = None, **fields) -> None:
        knobs = losses.knobs()
        given = {k: fields.pop(k) for k in list(fields) if k in knobs}
        super().__init__(**fields, loss={**dict.fromkeys(knobs), **(loss or {}), **given})

    def __getattr__(self, name: str):  # called only for a name that is no attribute: a knob
        knobs = self.__dict__.get("loss", {})
        if name in knobs:
            return knobs[name]
        raise AttributeError(f"TrainConfig has no field {name!r}")

    def loss_settings(self) -> dict:
        """The knobs of the registered terms, the keywords of VAEGANLoss (stylegan3's loss_kwargs)."""
        return {k: self.loss[k] for k in losses.knobs()}

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        knobs = d.pop("loss")
        return {**d, **knobs}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        check_fields(_TrainFields, {k: v for k, v in d.items() if k not in losses.knobs()}, "training config")
        # a run saved before these knobs existed trained without them: resuming it keeps its recipe
        if "adversarial_start" not in d and "lr" in d:
            d = {**d, "adversarial_start": 0.0, "ema": 0.0, "lr_schedule": "constant", "lr_dis": d["lr"]}
        if "ssim_weight" not in d and "lr" in d:
            d = {**d, "ssim_weight": 0.0, "kl_noise_scaled": False}
        if "saturation_weight" not in d and "lr" in d:
            d = {**d, "saturation_weight": 0.0}
        if "layout" not in d and "lr" in d:
            d = {**d, "layout": False}
        if "layout_scale" not in d and "lr" in d:
            d = {**d, "layout_scale": 1}
        if "augment" not in d and "lr" in d:
            d = {**d, "augment": False, "augment_plain": 0.25, "augment_degrade": 0.5}
        if "augment_grey" not in d and "lr" in d:  # from before the grey share was a knob
            d = {**d, "augment_grey": 0.35}
        return cls(**d)

    def model_config(self) -> ModelConfig:
        """The run's networks: its architecture's at its size, with the model fields it sets."""
        over = dict(self.model_overrides)
        if self.z_dim:
            over["z_dim"] = self.z_dim
        if self.layout is not None:
            over["layout"] = self.layout
        if self.layout_scale is not None:
            over["layout_scale"] = self.layout_scale
        try:
            return ModelConfig.preset(self.arch, width=self.width, height=self.height, **over)
        except (ValueError, TypeError) as exc:
            raise UserError(f"model configuration: {exc}") from None

    def save(self, path: str | Path) -> None:
        from autoencoded.training.weights import atomic_write_bytes

        atomic_write_bytes(path, (self.to_json() + "\n").encode())


def resolve(cfg: TrainConfig) -> TrainConfig:
    """Fill the fields left at None with the architecture's defaults, and the derived intervals."""
    try:
        defaults = archs.get(cfg.arch).training()
    except ValueError as exc:
        raise UserError(f"--arch: {exc}") from None
    model = ModelConfig.fields_of(cfg.arch)
    out = dataclasses.replace(cfg)
    for f in dataclasses.fields(out):
        if getattr(out, f.name) is not None:
            continue
        if f.name in MODEL_FIELDS:  # the networks' own: what the run's model config will hold
            setattr(out, f.name, MODEL_FIELDS[f.name](out.model_overrides.get(f.name, model[f.name])))
        elif f.name in defaults:
            setattr(out, f.name, defaults[f.name])
        else:
            raise UserError(f"training config: {f.name} has no default for --arch {cfg.arch}")
    for name, knob in losses.knobs().items():
        if out.loss.get(name) is None:
            out.loss[name] = defaults.get(name, knob.default)
    if out.lr_schedule not in LR_SCHEDULES:
        raise UserError(f"--lr-schedule {out.lr_schedule!r}: choose from {', '.join(LR_SCHEDULES)}")
    if not out.checkpoint_every:
        out.checkpoint_every = 100
    if not out.sample_every:
        out.sample_every = out.checkpoint_every
    return out
