"""The VAE-GAN of "Blade Runner - Autoencoded" (Broad 2016) after Larsen et al. 2016.

Encoder, Decoder and Discriminator, rebuilt from a ModelConfig that every checkpoint carries.
This module imports torch, the architecture table and the project's core (errors, documents, plugins):
export/ and live/ import it (and weights.py).

Conventions shared by the whole project:
- images are float tensors N x 3 x H x W in [-1, 1] (RGB); uint8 frames map by x / 127.5 - 1;
- the encoder returns (mu, log_sigma), each N x latent_dim; z = mu + sigma * eps;
- the decoder maps z to an image through tanh;
- with `layout`, the last entries of the latent are the input's layout: its BT.601 luma averaged over each
  cell of the layout grid, the bottom grid `layout_scale` times finer (16x9 for 256x144 at 1, lite's 128x72
  at 8), in [-1, 1], with sigma 1. The encoder computes them, it does not learn them, so footage the model
  never saw keeps its composition of light and dark while the learned code (z_dim entries) and the decoder
  paint it from the film's memory; the decoder also reads them as a picture at its first layer (pooled to
  the bottom grid) and at each later layer the grid is fine enough for.
- the discriminator returns (logits N, [feature maps of each conv layer]).
The three roles are written down once, as the protocols EncoderNetwork, DecoderNetwork and
DiscriminatorNetwork; an architecture entry (training/archs.py) names the classes that fill them, and
`network` builds and checks them. Encoder, Decoder and Discriminator here are the film's family.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import json
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from autoencoded import plugins
from autoencoded.documents import check_fields
from autoencoded.errors import UserError
from autoencoded.posterior import LatentPlan, Posterior
from autoencoded.training import archs

CONFIG_VERSION = 1
# the fields that came after the first checkpoints, at the value a stored config that lacks one meant
# (the defaults before they became lite's): an old checkpoint or pack rebuilds the network it was
STORED_BEFORE = {"upsample": "deconv", "dec_channels": (), "layout": False, "layout_scale": 1, "latent_channels": 0,
                 "latent_scale": 1, "noise_scale": 1.0}


@dataclass
class ModelConfig:
    """Everything needed to rebuild the three networks. Stored as JSON in every checkpoint.

    The defaults are the dream recipe's, the demo model's (training/archs.py): an architecture entry names only what it changes."""

    arch: str = "lite"
    width: int = 256
    height: int = 144
    z_dim: int = 0  # the learned code's size; 0 derives a spatial code's from its grid (see latent_channels)
    enc_channels: tuple[int, ...] = (32, 64, 128, 256)
    enc_kernel: int = 4
    dec_kernel: int = 4
    # decoder upsampling: "deconv" (transposed conv k4 s2 p1, the film's) or "resize" (nearest 2x then a
    # 3x3 conv: no checkerboard, since every output pixel sees the same number of kernel taps)
    upsample: str = "resize"
    dec_channels: tuple[int, ...] = (192, 96, 48, 24)  # decoder widths, widest first; () = the encoder's, mirrored
    # channels of the 1x1 "squeeze" before the FC bottleneck (0 = none): keeps the FC small
    bottleneck_channels: int = 32
    disc_channels: tuple[int, ...] = (32, 64, 128, 256)
    disc_kernel: int = 4
    disc_fc: int = 0  # hidden units of the discriminator head (0 = linear head)
    # indices of discriminator conv layers whose features define the learned similarity
    sim_layers: tuple[int, ...] = (0, 1, 2, 3)
    # bounded latent as in the film's model: mu = tanh, log_sigma = 0.5 * tanh. lite's learned code carries the
    # whole picture (no raw input bypasses it), bounded so that the noise's reach is noise_scale and not what
    # the KL leaves of sigma; docs/models.md has the levers measured side by side (benchmarks/bench_recipe.py)
    bounded_latent: bool = True
    # the input's luma at the bottom grid, carried in the latent and read by the decoder (module docstring)
    layout: bool = False
    # the layout's grid is the bottom grid this many times finer (a power of two, at most 2**stages): 8 gives
    # 128x72 at 256x144, whose finer pictures the decoder reads at its second, third and fourth layers too
    # (module docstring)
    layout_scale: int = 1
    # a spatial learned code (the VAEs latent diffusion decodes with): this many channels over a grid
    # `latent_scale` times finer than the bottom one, a mean and a sigma per cell and channel, from
    # convolutions instead of the FC; 0 keeps the FC's vector code of z_dim entries. z_dim is then
    # channels x rows x cols (0 derives it)
    latent_channels: int = 8
    latent_scale: int = 2
    # the std of live noise at amount 1 (noise/max 1), in units of the encoder's sigma: the top of what
    # training samples (autoencoded.posterior), recorded in model.json for live
    noise_scale: float = 2.5
    version: int = CONFIG_VERSION
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.enc_channels = tuple(int(c) for c in self.enc_channels)
        self.disc_channels = tuple(int(c) for c in self.disc_channels)
        self.dec_channels = tuple(int(c) for c in self.dec_channels)
        self.sim_layers = tuple(int(i) for i in self.sim_layers)
        if self.latent_channels > 0 and self.z_dim == 0:  # a spatial code's size follows from the frame's
            rows, cols = self.latent_grid
            self.z_dim = self.latent_channels * rows * cols
        self.validate()

    @property
    def stages(self) -> int:
        """How many times the networks halve the picture: the architecture entry's rule."""
        return archs.get(self.arch).stages(vars(self))

    @property
    def factor(self) -> int:
        return 2 ** self.stages

    @property
    def bottom(self) -> tuple[int, int]:
        """(height, width) of the smallest feature map."""
        return self.height // self.factor, self.width // self.factor

    @property
    def layout_grid(self) -> tuple[int, int]:
        """(rows, cols) of the layout: the bottom grid, layout_scale times finer."""
        bh, bw = self.bottom
        return bh * self.layout_scale, bw * self.layout_scale

    @property
    def layout_cells(self) -> int:
        """Latent entries that carry the input's layout (0 without it)."""
        rows, cols = self.layout_grid
        return rows * cols if self.layout else 0

    @property
    def latent_grid(self) -> tuple[int, int]:
        """(rows, cols) of a spatial learned code: the bottom grid, latent_scale times finer."""
        bh, bw = self.bottom
        return bh * self.latent_scale, bw * self.latent_scale

    @property
    def spatial(self) -> bool:
        return self.latent_channels > 0

    @property
    def plan(self) -> LatentPlan:
        """Which latent entries are learned, at what scale live noise plays them, and their shape."""
        shape = (self.latent_channels, *self.latent_grid) if self.spatial else None
        return LatentPlan(self.z_dim, float(self.noise_scale), shape)

    @property
    def latent_dim(self) -> int:
        """The latent's length as export, live and the memory bank see it: the learned code and the layout."""
        return self.z_dim + self.layout_cells

    def validate(self) -> None:
        archs.get(self.arch)  # an unknown name raises ValueError
        f = self.factor
        if self.width <= 0 or self.height <= 0 or self.width % f or self.height % f:
            raise ValueError(f"size {self.width}x{self.height}: both sides must be positive and divisible by {f}")
        if self.z_dim <= 0:
            raise ValueError("z_dim must be positive")
        s = self.layout_scale
        if s < 1 or s & (s - 1) or s > f:
            raise ValueError(f"layout_scale {s}: a power of two from 1 to {f}")
        if self.spatial:
            ls = self.latent_scale
            if ls < 1 or ls & (ls - 1) or ls >= f:
                raise ValueError(f"latent_scale {ls}: a power of two from 1 to {f // 2}")
            rows, cols = self.latent_grid
            if self.z_dim != self.latent_channels * rows * cols:
                raise ValueError(f"z_dim {self.z_dim}: a spatial code of {self.latent_channels} channels over "
                                 f"{cols}x{rows} cells has {self.latent_channels * rows * cols} entries "
                                 "(latent_channels 0 makes the code a vector of z_dim entries)")
            if self.layout:
                raise ValueError("a spatial learned code carries the composition itself: it takes no layout")
        if not 0 < self.noise_scale <= 100:
            raise ValueError(f"noise_scale {self.noise_scale}: above 0, at most 100")
        if self.upsample not in UPSAMPLERS:
            raise ValueError(f"upsample {self.upsample!r}: choose from {', '.join(UPSAMPLERS)}")
        if self.dec_channels and len(self.dec_channels) != len(self.enc_channels):
            raise ValueError("decoder and encoder must have the same number of stages")
        if len(self.disc_channels) != len(self.enc_channels):
            raise ValueError("discriminator and encoder must have the same number of stages")
        if not self.sim_layers or any(i < 0 or i >= len(self.disc_channels) for i in self.sim_layers):
            raise ValueError(f"sim_layers {self.sim_layers} out of range")
        if self.version > CONFIG_VERSION:
            raise ValueError(f"model config version {self.version} is newer than this tool ({CONFIG_VERSION})")

    @classmethod
    def preset(cls, arch: str, width: int = 256, height: int = 144, **overrides) -> ModelConfig:
        """The registered architecture `arch` (training/archs.py) at width x height, with overrides: the
        defaults, with what its entry changes, with what `overrides` change."""
        return cls(**{**archs.get(arch).model, "arch": arch, "width": width, "height": height, **overrides})

    @classmethod
    def fields_of(cls, arch: str) -> dict:
        """Every field of architecture `arch`'s config, before a size derives anything (a spatial code's
        z_dim stays 0): what its options' help and the training config's defaults read."""
        defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
        return {**defaults, **archs.get(arch).model, "arch": arch}

    @classmethod
    def size_multiple(cls, arch: str) -> int:
        """What both sides of a frame must divide by for architecture `arch` (its stages halve them)."""
        return 2 ** archs.get(arch).stages(cls.fields_of(arch))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for k in ("enc_channels", "dec_channels", "disc_channels", "sim_layers"):
            d[k] = list(d[k])
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        """A stored config (a checkpoint's, a pack's); one written before a field existed meant its value then."""
        check_fields(cls, d, "model config")
        return cls(**{**STORED_BEFORE, **d})


def _pad(kernel: int) -> int:
    # k4 s2 p1 and k5 s2 p2 both halve even sizes exactly
    return 1 if kernel == 4 else kernel // 2


def _down(cin: int, cout: int, kernel: int, bn: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride=2, padding=_pad(kernel), bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    return nn.Sequential(*layers)


def _down_stages(channels: tuple[int, ...], kernel: int) -> list[nn.Sequential]:
    """The halving stages from the RGB picture through `channels`, as the encoder and the discriminator
    both see it; the first has no BatchNorm (it sees the picture itself)."""
    chans = (3, *channels)
    return [_down(chans[i], chans[i + 1], kernel, bn=i > 0) for i in range(len(channels))]


def _deconv(cin: int, cout: int, kernel: int, bias: bool) -> list[nn.Module]:
    # transposed conv k4 s2 p1 doubles exactly with no output_padding (TensorRT-friendly)
    if kernel != 4:
        raise ValueError("decoder kernel must be 4 (exact 2x upsampling without output_padding)")
    return [nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=bias)]


def _resize(cin: int, cout: int, kernel: int, bias: bool) -> list[nn.Module]:
    return [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, padding=1, bias=bias)]


# the decoder's doubling layers by ModelConfig.upsample: a new kind is one entry
UPSAMPLERS = {"deconv": _deconv, "resize": _resize}


def _up(cin: int, cout: int, kernel: int, last: bool, upsample: str = "deconv") -> nn.Sequential:
    layers = UPSAMPLERS[upsample](cin, cout, kernel, bias=last)
    layers += [nn.Tanh()] if last else [nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


LUMA = (0.299, 0.587, 0.114)  # BT.601, as autoencoded.metrics.structure weighs the channels


def layout_of(x: torch.Tensor, cells: tuple[int, int]) -> torch.Tensor:
    """Images (N,3,H,W) in [-1,1] -> their luma averaged over a rows x cols grid, (N, rows * cols)."""
    weights = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    luma = (x * weights).sum(1, keepdim=True)
    rows, cols = cells
    return F.avg_pool2d(luma, (x.shape[2] // rows, x.shape[3] // cols)).flatten(1)


# ---- the three roles, written down once ----------------------------------------------------------------

@runtime_checkable
class EncoderNetwork(Protocol):
    """Image (N,3,H,W) in [-1,1] -> (mu, log_sigma), each (N, latent_dim). Training takes the pieces apart:
    `forward(x, raw=True)` gives the learned code's (N, z_dim) before its bound, `bound` bounds them (the KL
    and the saturation penalty are of those), `latent` completes them with what the model computes (the
    layout); `forward(x)` is `latent(x, *bound(*forward(x, raw=True)))`, what export and live run."""

    def forward(self, x: torch.Tensor, raw: bool = False) -> tuple[torch.Tensor, torch.Tensor]: ...

    def bound(self, mu: torch.Tensor, log_sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def latent(self, x: torch.Tensor, mu: torch.Tensor, log_sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ...


@runtime_checkable
class DecoderNetwork(Protocol):
    """Latent (N, latent_dim) -> image (N,3,H,W) in [-1,1]."""

    def forward(self, z: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class DiscriminatorNetwork(Protocol):
    """Image (N,3,H,W) -> (logits (N,), [feature maps of each stage]); ModelConfig.sim_layers index the maps."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]: ...


ROLES = {"encoder": EncoderNetwork, "decoder": DecoderNetwork, "discriminator": DiscriminatorNetwork}


def network(cfg: ModelConfig, role: str) -> nn.Module:
    """The `role` network of cfg's architecture: the class its entry names, built from cfg and checked. A
    plugin's class that cannot be imported or built, or is no network of its role, is one line naming the
    plugin (a built-in's is our bug, and raises)."""
    arch = archs.get(cfg.arch)
    name = arch.networks[role]

    def make() -> nn.Module:
        module_name, _, class_name = name.rpartition(".")
        return getattr(importlib.import_module(module_name), class_name)(cfg)

    net = plugins.made_by(arch.origin, f"architecture {cfg.arch}: {role} {name}", make, nn.Module)
    if not isinstance(net, nn.Module) or not isinstance(net, ROLES[role]):
        why = f"architecture {cfg.arch}: {role} {name} is no {ROLES[role].__name__} (training/model.py)"
        raise TypeError(why) if arch.origin is None else UserError(f"plugin {arch.origin}: {why}")
    return net


# ---- the film's family ----------------------------------------------------------------------------------

class Encoder(nn.Module):
    """Image (N,3,H,W) in [-1,1] -> (mu, log_sigma), each (N, latent_dim): the learned code, then the layout.
    The code is a vector from an FC over the bottom grid, or with `latent_channels` a map from a 3x3
    convolution over the features at its grid (the stages below it are not run)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        stages = _down_stages(cfg.enc_channels, cfg.enc_kernel)
        if cfg.spatial:
            kept = cfg.stages - cfg.latent_scale.bit_length() + 1
            self.convs = nn.Sequential(*stages[:kept])
            self.head = nn.Conv2d(cfg.enc_channels[kept - 1], 2 * cfg.latent_channels, 3, padding=1)
            return
        self.convs = nn.Sequential(*stages)
        c = cfg.enc_channels[-1]
        if cfg.bottleneck_channels:
            self.squeeze: nn.Module = nn.Sequential(
                nn.Conv2d(c, cfg.bottleneck_channels, 1, bias=False),
                nn.BatchNorm2d(cfg.bottleneck_channels), nn.LeakyReLU(0.2, inplace=True))
            c = cfg.bottleneck_channels
        else:
            self.squeeze = nn.Identity()
        bh, bw = cfg.bottom
        self.fc = nn.Linear(c * bh * bw, 2 * cfg.z_dim)

    def forward(self, x: torch.Tensor, raw: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, log_sigma) of the whole latent; with `raw`, the learned code alone before the bound (training
        penalises a saturated tanh and takes the KL of it, see losses, then completes it with `latent`)."""
        if self.cfg.spatial:  # channel-major: entry c * rows * cols + r * cols + k
            mu, log_sigma = self.head(self.convs(x)).chunk(2, dim=1)
            mu, log_sigma = mu.flatten(1), log_sigma.flatten(1)
        else:
            h = self.squeeze(self.convs(x)).flatten(1)
            mu, log_sigma = self.fc(h).chunk(2, dim=1)
        return (mu, log_sigma) if raw else self.latent(x, *self.bound(mu, log_sigma))

    def bound(self, mu: torch.Tensor, log_sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cfg.bounded_latent:
            return torch.tanh(mu), 0.5 * torch.tanh(log_sigma)
        # unbounded (a spatial code's mean, as latent diffusion's VAE): sigma kept from 0.0025 to 7.4
        return mu, log_sigma.clamp(-6.0, 2.0)

    def latent(self, x: torch.Tensor, mu: torch.Tensor, log_sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The learned code's (mu, log_sigma) followed by the layout of `x` (sigma 1), when the model has one."""
        if not self.cfg.layout:
            return mu, log_sigma
        lay = layout_of(x, self.cfg.layout_grid).to(mu.dtype)
        return torch.cat([mu, lay], 1), torch.cat([log_sigma, torch.zeros_like(lay)], 1)


def encode(encoder: nn.Module, x: torch.Tensor, cfg: ModelConfig) -> Posterior:
    """The encoder's posterior over the latent of images `x`: the one encode training, export and eval read
    (an architecture's encoder fills EncoderNetwork; this assembles its pieces)."""
    pre_mu, pre_log_sigma = encoder(x, raw=True)
    mu, log_sigma = encoder.bound(pre_mu, pre_log_sigma)
    mean, full_log_sigma = encoder.latent(x, mu, log_sigma)
    return Posterior(mean, full_log_sigma, cfg.plan, pre_mean=pre_mu)


class Decoder(nn.Module):
    """Latent (N, latent_dim) -> image (N,3,H,W) in [-1,1]. The layout entries go through the FC with the
    learned code and, as a one-channel picture of the bottom grid, beside the FC's output into the first
    layer after it: the composition arrives where it is, not only as 144 numbers the FC must learn to place.
    A finer layout (layout_scale 2**k) is pooled to the bottom grid for the FC and that first picture, and
    read at its own resolution beside the input of layer k too (each power of two between)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        widths = cfg.dec_channels or tuple(reversed(cfg.enc_channels))
        self.picture_pad: dict[int, int] = {}  # zero channels after the layout picture (padded_for_inference)
        self.pictured: set[int] = set()
        if cfg.spatial:  # the code's map, widened by a 3x3 convolution, enters the layer of its resolution
            chans = (*widths, 3)
            self.first = cfg.latent_scale.bit_length() - 1
            self.stem = nn.Sequential(nn.Conv2d(cfg.latent_channels, chans[self.first], 3, padding=1, bias=False),
                                      nn.BatchNorm2d(chans[self.first]), nn.ReLU(inplace=True))
            self.deconvs = nn.Sequential(*[_up(chans[i], chans[i + 1], cfg.dec_kernel, last=i == cfg.stages - 1,
                                               upsample=cfg.upsample) for i in range(self.first, cfg.stages)])
            return
        c = widths[0]
        bh, bw = cfg.bottom
        self.c0 = cfg.bottleneck_channels or c
        fc_in = cfg.z_dim + (bh * bw if cfg.layout else 0)
        self.fc = nn.Sequential(nn.Linear(fc_in, self.c0 * bh * bw, bias=False),
                                nn.BatchNorm1d(self.c0 * bh * bw), nn.ReLU(inplace=True))
        extra = 1 if cfg.layout else 0  # the layout picture's channel
        if cfg.bottleneck_channels:
            self.expand: nn.Module = nn.Sequential(nn.Conv2d(self.c0 + extra, c, 1, bias=False),
                                                   nn.BatchNorm2d(c), nn.ReLU(inplace=True))
        else:
            self.expand = nn.Identity()
            c += extra
        chans = (c, *widths[1:], 3)
        # layers 1..k read the layout at their input's resolution, beside their input
        self.pictured = {i for i in range(1, cfg.stages) if cfg.layout and 2 ** i <= cfg.layout_scale}
        self.deconvs = nn.Sequential(
            *[_up(chans[i] + (i in self.pictured), chans[i + 1], cfg.dec_kernel, last=i == cfg.stages - 1,
                  upsample=cfg.upsample)
              for i in range(cfg.stages)]
        )

    def padded_for_inference(self, multiple: int = 8) -> Decoder:
        """A copy whose layers that read the layout picture take it followed by zero channels, with zero
        weights for them, so those layers' inputs have a multiple of `multiple` channels. The picture is the
        same (the zeros add nothing; the weights as trained are untouched), but ONNX Runtime on the CPU runs a
        convolution in its blocked NCHWc layout only when the channels divide by 8: the layout's one extra
        channel sent those layers to its plain path (what it cost: docs/speed.md). Export writes this copy."""
        padded = copy.deepcopy(self)
        for i in sorted(self.pictured):
            layer = padded.deconvs[i]
            at = next(j for j, m in enumerate(layer) if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)))
            conv = layer[at]
            pad = -conv.in_channels % multiple
            if not pad:
                continue
            transposed = isinstance(conv, nn.ConvTranspose2d)
            wider = type(conv)(conv.in_channels + pad, conv.out_channels, conv.kernel_size, stride=conv.stride,
                               padding=conv.padding, bias=conv.bias is not None)
            with torch.no_grad():
                wider.weight.zero_()
                # Conv2d weights are (out, in, kh, kw), ConvTranspose2d's (in, out, kh, kw)
                (wider.weight[:conv.in_channels] if transposed else wider.weight[:, :conv.in_channels]).copy_(
                    conv.weight)
                if conv.bias is not None:
                    wider.bias.copy_(conv.bias)
            layer[at] = wider.to(conv.weight.device, conv.weight.dtype)
            padded.picture_pad[i] = pad
        return padded

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        bh, bw = self.cfg.bottom
        if self.cfg.spatial:
            return self.deconvs(self.stem(z.unflatten(1, self.cfg.plan.shape)))
        if not self.cfg.layout:
            return self.deconvs(self.expand(self.fc(z).view(z.shape[0], self.c0, bh, bw)))
        scale = self.cfg.layout_scale
        picture = z[:, self.cfg.z_dim:].unflatten(1, (1, bh * scale, bw * scale))
        coarse = F.avg_pool2d(picture, scale) if scale > 1 else picture
        code = z if scale == 1 else torch.cat([z[:, :self.cfg.z_dim], coarse.flatten(1)], 1)
        h = self.fc(code).view(z.shape[0], self.c0, bh, bw)
        h = self.expand(torch.cat([h, coarse.to(h.dtype)], 1))
        for i, layer in enumerate(self.deconvs):
            if i in self.pictured:
                at = F.avg_pool2d(picture, scale // 2 ** i) if scale > 2 ** i else picture
                h = torch.cat([h, at.to(h.dtype)], 1)
                if self.picture_pad.get(i):
                    h = F.pad(h, (0, 0, 0, 0, 0, self.picture_pad[i]))
            h = layer(h)
        return h


class Discriminator(nn.Module):
    """Image -> (logits (N,), [features of each conv layer]). Mirrors the encoder; first layer has no BN."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.convs = nn.ModuleList(_down_stages(cfg.disc_channels, cfg.disc_kernel))  # each stage's features
        bh, bw = cfg.bottom
        flat = cfg.disc_channels[-1] * bh * bw
        if cfg.disc_fc:
            self.head: nn.Module = nn.Sequential(nn.Linear(flat, cfg.disc_fc), nn.LeakyReLU(0.2, inplace=True),
                                                 nn.Linear(cfg.disc_fc, 1))
        else:
            self.head = nn.Linear(flat, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        feats = []
        h = x
        for conv in self.convs:
            h = conv(h)
            feats.append(h)
        return self.head(h.flatten(1)).squeeze(1), feats


class AutoEncoder(nn.Module):
    """Encoder + decoder only (what export and live need): forward decodes the mean."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = network(cfg, "encoder")
        self.decoder = network(cfg, "decoder")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu, _ = self.encoder(x)
        return self.decoder(mu)


class VAEGAN(AutoEncoder):
    """The autoencoder and its discriminator, the three networks trained together; state_dict keys are
    prefixed encoder., decoder. and discriminator. (the first two load into an AutoEncoder as they are)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.discriminator = network(cfg, "discriminator")


def build(cfg: ModelConfig) -> VAEGAN:
    return VAEGAN(cfg)


def autoencoder_from_state(cfg: ModelConfig, state: dict[str, torch.Tensor]) -> AutoEncoder:
    """Rebuild encoder + decoder from a (full VAEGAN or autoencoder-only) state dict, in eval mode: the
    averaged weights (ema.*) when the state has them, else the live ones."""
    ae = AutoEncoder(cfg)
    # a checkpoint trained with --ema carries the averaged weights under "ema.": those are the model
    prefix = "ema." if any(k.startswith(("ema.encoder.", "ema.decoder.")) for k in state) else ""
    wanted = {k[len(prefix):]: v for k, v in state.items() if k.startswith((f"{prefix}encoder.", f"{prefix}decoder."))}
    ae.load_state_dict(wanted, strict=True)
    return ae.eval()


def frames_to_input(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (N,H,W,3) RGB -> float (N,3,H,W) in [-1,1]."""
    return frames.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def output_to_frames(images: torch.Tensor) -> torch.Tensor:
    """float (N,3,H,W) in [-1,1] -> uint8 (N,H,W,3) RGB, NaN-safe."""
    x = torch.nan_to_num(images, nan=0.0, posinf=1.0, neginf=-1.0)
    return ((x.clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_flops(module: nn.Module, *inputs: torch.Tensor) -> int:
    """Multiply-adds x 2 of convolutions and linear layers for one forward pass (batch as given)."""
    total = 0

    def conv_hook(m: nn.Module, inp, out) -> None:
        nonlocal total
        if isinstance(m, nn.ConvTranspose2d):
            x = inp[0]
            total += 2 * x.numel() * m.out_channels * m.kernel_size[0] * m.kernel_size[1] // m.groups
        else:
            total += 2 * out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def linear_hook(m: nn.Module, inp, out) -> None:
        nonlocal total
        total += 2 * out.numel() * m.in_features

    handles = []
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            module(*inputs)
    finally:
        for h in handles:
            h.remove()
        module.train(was_training)
    return total
