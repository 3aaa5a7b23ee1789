"""The architecture registry: a new architecture is one entry here, what its networks and its training
change from the defaults, which are the dream recipe's (the demo model's).

`networks` names the classes of its encoder, decoder and discriminator by their dotted names (stylegan3's
`class_name`, diffusers' `_class_name`); each is built from the ModelConfig and keeps its role's protocol in
training/model.py (EncoderNetwork, ...). `model` holds the ModelConfig fields (the networks' sizes) it
changes from ModelConfig's defaults, `train` the TrainConfig fields and loss-term knobs it changes from
TRAINING, both applied when the user leaves a field unset (None); an entry that sets nothing is the dream recipe's
networks and recipe, and an entry with complete dicts (every field named) means what it says. A loss
term's knob that neither names takes the term's default (training/losses.py). `stages` says how many
times its networks halve the picture, so a size must divide by 2 ** stages. Click's --arch choices,
ModelConfig.preset and the training config all read this table, so an unknown name is an error
everywhere, never another entry's defaults. Of the project it imports only autoencoded.plugins (to record
which plugin registered an entry), so model.py (torch and the core only) and config.py can both read it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from autoencoded import plugins

# the film's family (training/model.py): the encoder's and the discriminator's stride-2 stages, mirrored
FAMILY = {"encoder": "autoencoded.training.model.Encoder", "decoder": "autoencoded.training.model.Decoder",
          "discriminator": "autoencoded.training.model.Discriminator"}


def halvings(model: Mapping) -> int:
    """The family's stage count: one halving of each side per encoder stage."""
    return len(model["enc_channels"])


# The training defaults, the dream recipe's (the demo model's), lite's CPU recipe with the dream share: a pixel-led autoencoder whose averaged weights (EMA) are evaluated
# and exported, the discriminator left out (--adversarial-start 0.9 brings it back), and half of each batch
# decoded at the noise amounts live plays, the other half near the mean (prior std 0.05)
TRAINING = dict(batch=16, lr=2e-3, lr_dis=2e-4, beta1=0.9, lr_schedule="cosine", noise_start=0.05, noise_end=0.05,
                dream_share=0.5, pixel_weight=1.0, ssim_weight=0.5, kl_noise_scaled=True, saturation_weight=0.1,
                sim_weight=0.1, gamma=0.1, kl_weight=1e-3, gan_weight=0.01, adversarial_start=1.0, ema=0.999,
                augment=True, augment_plain=0.5, augment_degrade=0.5, augment_grey=0.35)


@dataclass(frozen=True)
class Arch:
    name: str
    description: str
    model: dict = field(default_factory=dict)  # the ModelConfig fields it changes (training/model.py)
    train: dict = field(default_factory=dict)  # the training defaults it changes (TRAINING)
    networks: Mapping[str, str] = field(default_factory=lambda: dict(FAMILY))
    stages: Callable[[Mapping], int] = halvings  # of the ModelConfig's fields (ModelConfig.fields_of)
    origin: str | None = None  # the plugin that registered it (autoencoded.plugins), None for a built-in

    def training(self) -> dict:
        """Its training defaults: TRAINING with what the entry changes."""
        return {**TRAINING, **self.train}


# The film's objective (Larsen et al. / Broad 2016): no pixel term, similarity on all discriminator layers,
# the discriminator from the first step, no weight averaging. On lite it is these flags:
# --pixel-weight 0 --ssim-weight 0 --saturation-weight 0 --sim-weight 1 --gamma 2.5 --kl-weight 1 --kl-plain
# --gan-weight 1 --adversarial-start 0 --ema 0
VAEGAN_OBJECTIVE = dict(pixel_weight=0.0, ssim_weight=0.0, sim_weight=1.0, gamma=2.5, kl_weight=1.0,
                        kl_noise_scaled=False, saturation_weight=0.0, gan_weight=1.0, adversarial_start=0.0, ema=0.0)

ARCHS: dict[str, Arch] = {
    "broad2016": Arch(
        "broad2016",
        "the film's model: 5x5 stride-2 convs 80-160-320-640 at 256x144, FC to z=200, mirrored decoder "
        "(transposed convs), a discriminator that mirrors the encoder; Adam 2e-4, beta1 0.5, batch 12",
        model=dict(z_dim=200, latent_channels=0, latent_scale=1, noise_scale=1.0, enc_channels=(80, 160, 320, 640),
                   enc_kernel=5, upsample="deconv", dec_channels=(), bottleneck_channels=0,
                   disc_channels=(80, 160, 320, 640), disc_kernel=5),
        # the film trained every sample at the schedule's noise, without the dream share
        train=dict(batch=12, lr=2e-4, beta1=0.5, lr_schedule="constant", noise_start=1.0, noise_end=0.1,
                   dream_share=0.0, augment=False, augment_plain=0.25, **VAEGAN_OBJECTIVE),
    ),
    # the defaults themselves (ModelConfig's, TRAINING): the demo model's recipe
    "dream": Arch(
        "dream",
        "lite's family and CPU recipe with a spatial code: 4x4 stride-2 convs 32-64-128 to 8 channels over "
        "32x18 cells (a mean and a sigma each, no FC, nothing of the input beside it), a resize-convolution "
        "decoder 96-48-24, half of each batch decoded at the noise amounts live plays; ~0.8 GFLOPs",
    ),
    # the recipe before the dream: a 256-entry FC code beside the input's luma at 128x72, noise 0.3 -> 0.05
    # on the schedule alone (the suite's small models exercise this code)
    "lite": Arch(
        "lite",
        "the same family for a laptop CPU: 4x4 stride-2 convs 32-64-128-256, a 1x1 squeeze to 32 channels "
        "before the FC to z=256, beside the input's luma at 128x72, a resize-convolution decoder 192-96-48-24 "
        "(no checkerboard); ~1.1 GFLOPs",
        model=dict(z_dim=256, latent_channels=0, latent_scale=1, noise_scale=1.0, layout=True, layout_scale=8),
        train=dict(noise_start=0.3, dream_share=0.0),
    ),
}



def register(arch: Arch) -> None:
    """Add an architecture (a plugin's, a test's): --arch, ModelConfig.preset and export know it by name."""
    if arch.name in ARCHS:
        raise ValueError(f"architecture {arch.name!r} is registered already")
    if arch.origin is None:
        arch = replace(arch, origin=plugins.loading())
    ARCHS[arch.name] = arch


def names() -> list[str]:
    return list(ARCHS)


def get(name: str) -> Arch:
    try:
        return ARCHS[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r} (choose from {', '.join(ARCHS)})") from None
