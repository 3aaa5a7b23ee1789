"""Training augmentation: the film seen through other cameras, so the model learns to see what it is shown.

A model trained on the film's frames as they are memorises them: footage it never saw (a webcam, another
film) falls outside what it knows, and comes back as the nearest remembered haze, whatever its layout. Two
kinds of change teach the encoder the layout of light and dark instead of the identity of frames:

- geometry, applied to the input and to the target alike: a random resized crop (a quarter of the frame to
  all of it, aspect 3:4 to 4:3), a horizontal flip and a small rotation. The film's frames then arrive in
  compositions the film never had, at other scales and angles, as a handheld camera gives them;
- degradation of the input alone, after Akten's "Learning to See": grey, a hue rotation, swapped channels,
  blur, exposure (gain, contrast, gamma) and sensor noise. The target stays the film's clean frame, so the
  decoder learns to answer a grey or off-colour picture in the film's own colours: that is the palette
  transfer a VJ plays with, a greyscale camera coming out in the film's colours.

A fraction of each batch (`plain`) stays as it is, so the film's own frames keep their share of the
training signal: reconstructing the film well and seeing foreign footage compete for the same capacity.

Every random draw comes from the caller's generator (seeded per step and micro-batch), so a resumed run
augments exactly as the uninterrupted run did. The work is a few elementwise passes and one grid sample on
the batch, small beside the networks' convolutions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# geometry: the crop's area as a fraction of the frame, its aspect change, the rotation (degrees)
CROP_AREA = (0.25, 1.0)
CROP_ASPECT = (3 / 4, 4 / 3)
ROTATION_DEG = 10.0
# the input's degradations and their probabilities, for a sample whose input is degraded at all (grey's
# is the Augmentation's `grey`, a training knob: a greyscale camera in the film's colours is learned from it)
P_GREY, P_HUE, P_SWAP, P_BLUR, P_EXPOSURE, P_NOISE = 0.35, 0.3, 0.15, 0.3, 0.5, 0.25
BLUR_FACTORS = (2, 3, 4)  # down by this factor (area), back up bilinearly
GAMMA = (0.6, 1.6)
CONTRAST = (0.6, 1.4)
GAIN = (-0.2, 0.2)  # added to 0..1 pixels
NOISE_STD = (0.01, 0.06)  # of 0..1 pixels
LUMA = (0.299, 0.587, 0.114)  # BT.601


@dataclass(frozen=True)
class Augmentation:
    """How much of a batch is changed: `plain` of the samples stay the film's frames as they are; of the
    others, each is recomposed (geometry) and `degrade` of them also reach the encoder degraded."""

    plain: float = 0.25
    degrade: float = 0.5
    grey: float = P_GREY  # of the degraded samples, the share whose input is grey

    def __post_init__(self) -> None:
        for name in ("plain", "degrade", "grey"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and 0.0 <= v <= 1.0):
                raise ValueError(f"augmentation {name} {v!r}: must be between 0 and 1")

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(encoder input, target) for a batch `x` (N x 3 x H x W in [-1, 1]); `x` itself is left alone."""
        n = x.shape[0]
        changed = _draw(n, gen) >= self.plain
        degraded = changed & (_draw(n, gen) < self.degrade)
        if not bool(changed.any()):
            return x, x
        # only the chosen samples go through the work (index_copy on copies; `x` is left alone)
        pick = changed.nonzero().view(-1).to(x.device)
        target = x.index_copy(0, pick, recompose(x.index_select(0, pick), gen))
        if not bool(degraded.any()):
            return target, target
        pick = degraded.nonzero().view(-1).to(x.device)
        inp = target.index_copy(0, pick, degrade(target.index_select(0, pick), gen, self.grey))
        return inp, target


def _draw(n: int, gen: torch.Generator, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen)


def _mask(flags: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-sample flags shaped to select whole images of `like` in torch.where."""
    return flags.to(like.device).view(-1, 1, 1, 1)


def recompose(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Every sample through a random resized crop, flip and rotation (reflected at the borders, so a
    rotated crop has no black corners for the model to learn as part of the film)."""
    n, _, h, w = x.shape
    area = _draw(n, gen, *CROP_AREA)
    log_aspect = _draw(n, gen, math.log(CROP_ASPECT[0]), math.log(CROP_ASPECT[1]))
    sx = (area.sqrt() * log_aspect.mul(0.5).exp()).clamp(max=1.0)  # crop width / frame width
    sy = (area.sqrt() * log_aspect.mul(-0.5).exp()).clamp(max=1.0)
    angle = _draw(n, gen, -ROTATION_DEG, ROTATION_DEG) * (math.pi / 180)
    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    tx = _draw(n, gen, -1.0, 1.0) * (1 - sx)
    ty = _draw(n, gen, -1.0, 1.0) * (1 - sy)
    cos, sin = angle.cos(), angle.sin()
    # affine_grid maps output to input in coordinates normalised per axis; a rotation by `angle` in pixels
    # is diag(1/w, 1/h) R diag(w, h) there (a plain R would shear a 16:9 frame)
    theta = torch.stack([
        torch.stack([cos * sx * flip, -sin * sy * (h / w), tx], dim=1),
        torch.stack([sin * sx * flip * (w / h), cos * sy, ty], dim=1),
    ], dim=1).to(device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def degrade(x: torch.Tensor, gen: torch.Generator, grey: float = P_GREY) -> torch.Tensor:
    """Every sample with each degradation applied at its probability (grey's is `grey`), in the order a
    camera would."""
    n = x.shape[0]
    dev = x.device
    p = (x + 1) * 0.5  # 0..1
    luma_w = torch.tensor(LUMA, device=dev, dtype=x.dtype).view(1, 3, 1, 1)

    def pick(prob: float) -> torch.Tensor:
        return _mask(torch.rand(n, generator=gen) < prob, x)

    # exposure: gamma, contrast about the frame's mean, gain
    gamma = _draw(n, gen, math.log(GAMMA[0]), math.log(GAMMA[1])).exp().to(dev).view(-1, 1, 1, 1)
    contrast = _draw(n, gen, *CONTRAST).to(dev).view(-1, 1, 1, 1)
    gain = _draw(n, gen, *GAIN).to(dev).view(-1, 1, 1, 1)
    exposed = p.clamp(1e-4, 1).pow(gamma)
    mean = exposed.mean(dim=(1, 2, 3), keepdim=True)
    exposed = ((exposed - mean) * contrast + mean + gain).clamp(0, 1)
    p = torch.where(pick(P_EXPOSURE), exposed, p)
    # hue: a rotation of the chroma plane about the grey axis (YIQ), saturation and luma kept
    angle = _draw(n, gen, -math.pi, math.pi)
    p = torch.where(pick(P_HUE), _rotate_hue(p, angle.to(dev, x.dtype)), p)
    # swapped channels: one of the five non-identity permutations of RGB
    perms = torch.tensor([[0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]], device=dev)
    which = perms[torch.randint(0, len(perms), (n,), generator=gen).to(dev)]
    swapped = torch.gather(p, 1, which.view(n, 3, 1, 1).expand_as(p))
    p = torch.where(pick(P_SWAP), swapped, p)
    # grey: luma in all three channels (a black-and-white film, a greyscale camera)
    luma = (p * luma_w).sum(dim=1, keepdim=True).expand_as(p)
    p = torch.where(pick(grey), luma, p)
    # blur: an out-of-focus or low-resolution camera (one factor for the batch: a resize is per shape)
    factor = BLUR_FACTORS[int(torch.randint(0, len(BLUR_FACTORS), (1,), generator=gen))]
    h, w = p.shape[-2:]
    small = F.interpolate(p, size=(max(1, h // factor), max(1, w // factor)), mode="area")
    blurred = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    p = torch.where(pick(P_BLUR), blurred, p)
    # sensor noise
    std = _draw(n, gen, *NOISE_STD).to(dev, x.dtype).view(-1, 1, 1, 1)
    noise = torch.randn(p.shape, generator=gen).to(dev, x.dtype) * std
    p = torch.where(pick(P_NOISE), (p + noise).clamp(0, 1), p)
    return p * 2 - 1


def _rotate_hue(p: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    rgb_to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
                              device=p.device, dtype=p.dtype)
    yiq_to_rgb = torch.linalg.inv(rgb_to_yiq)
    cos, sin = angle.cos(), angle.sin()
    one, zero = torch.ones_like(cos), torch.zeros_like(cos)
    rot = torch.stack([torch.stack([one, zero, zero], 1), torch.stack([zero, cos, -sin], 1),
                       torch.stack([zero, sin, cos], 1)], 1)  # N x 3 x 3
    m = yiq_to_rgb @ rot @ rgb_to_yiq  # N x 3 x 3
    return torch.einsum("nij,njhw->nihw", m, p).clamp(0, 1)
