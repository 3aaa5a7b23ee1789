"""The architecture registry: a new architecture is one entry here, its networks and its training defaults.

`networks` names the classes of its encoder, decoder and discriminator by their dotted names (stylegan3's
`class_name`, diffusers' `_class_name`); each is built from the ModelConfig and keeps its role's protocol in
training/model.py (EncoderNetwork, ...). `model` holds ModelConfig fields (the networks' sizes), `train` holds TrainConfig
fields that the architecture sets when the user leaves them unset (None); a loss term's knob it does not
name takes the term's default (training/losses.py). `stages` says how many times its networks halve the
picture, so a size must divide by 2 ** stages. Click's --arch choices, ModelConfig.preset and the training
config all read this table, so an unknown name is an error everywhere, never another entry's defaults.
Of the project it imports only autoencoded.plugins (to record which plugin registered an entry), so
model.py (torch and the core only) and config.py can both read it.
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


@dataclass(frozen=True)
class Arch:
    name: str
    description: str
    model: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    networks: Mapping[str, str] = field(default_factory=lambda: dict(FAMILY))
    stages: Callable[[Mapping], int] = halvings  # of the ModelConfig's fields
    origin: str | None = None  # the plugin that registered it (autoencoded.plugins), None for a built-in

    def size_multiple(self, model: Mapping | None = None) -> int:
        """What both sides of a frame must divide by, for these ModelConfig fields (default: the entry's)."""
        return 2 ** self.stages({**self.model, **(model or {})})


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
        model=dict(z_dim=200, enc_channels=(80, 160, 320, 640), enc_kernel=5, dec_kernel=4, upsample="deconv",
                   dec_channels=(), bottleneck_channels=0, disc_channels=(80, 160, 320, 640), disc_kernel=5,
                   disc_fc=0, sim_layers=(0, 1, 2, 3), bounded_latent=True, layout=False),
        train=dict(batch=12, lr=2e-4, lr_dis=2e-4, beta1=0.5, lr_schedule="constant", noise_start=1.0,
                   noise_end=0.1, augment=False, augment_plain=0.25, augment_degrade=0.5, **VAEGAN_OBJECTIVE),
    ),
    "lite": Arch(
        "lite",
        "the same family for a laptop CPU: 4x4 stride-2 convs 32-64-128-256, a 1x1 squeeze to 32 channels "
        "before the FC to z=256, a resize-convolution decoder 192-96-48-24 (no checkerboard); ~1.1 GFLOPs",
        model=dict(z_dim=256, enc_channels=(32, 64, 128, 256), enc_kernel=4, dec_kernel=4, upsample="resize",
                   dec_channels=(192, 96, 48, 24), bottleneck_channels=32, disc_channels=(32, 64, 128, 256),
                   disc_kernel=4, disc_fc=0, sim_layers=(0, 1, 2, 3), bounded_latent=True, layout=True,
                   # the layout at 128x72, eight times the bottom grid, read by the decoder's second, third
                   # and fourth layers too: measured side by side (bench_recipe.py, layout-4 against new, one
                   # core each), at 6 CPU minutes the 8 s window's SSIM 0.651 against 0.571 at 64x36 and the
                   # trailer +1.83 dB over the thumbnail against +1.08 (in 232 steps against 263); 64x36 had
                   # beaten 32x18 the same way (+1.76 dB against +0.80, the window's SSIM 0.567 against
                   # 0.506), and 32x18 the 16x9 grid (structure 0.90 / 0.93 against 0.76 / 0.86, the output
                   # moving with its input on every foreign clip)
                   layout_scale=8),
        # the CPU recipe (README, "Training recipe"): a pixel-led autoencoder, an EMA of the weights is what
        # is evaluated. The discriminator does not join: measured side by side at 12 CPU minutes
        # (benchmarks/bench_recipe.py, new against no-gan), its last tenth bought no texture (output detail
        # 0.094 of the film's against 0.097 without it) and cost PSNR (+0.40 against +0.62 dB over the
        # thumbnail), structure and colour; --adversarial-start 0.9 brings it back
        train=dict(batch=16, lr=2e-3, lr_dis=2e-4, beta1=0.9, lr_schedule="cosine", noise_start=0.3,
                   noise_end=0.05, pixel_weight=1.0, ssim_weight=0.5, kl_noise_scaled=True, saturation_weight=0.1,
                   sim_weight=0.1, gamma=0.1, kl_weight=1e-3, gan_weight=0.01,
                   adversarial_start=1.0, ema=0.999, augment=True, augment_plain=0.5, augment_degrade=0.5),
    ),
    "dream": Arch(
        "dream",
        "lite's family and CPU recipe, dreaming (the demo model's): 4x4 stride-2 convs 32-64-128 to a spatial code of 8 channels over "
        "32x18 cells (a mean and a sigma each, no FC), a resize-convolution decoder 96-48-24 (no checkerboard); "
        "~0.8 GFLOPs",
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
