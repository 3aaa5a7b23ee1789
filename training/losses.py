"""Losses of the VAE-GAN after Larsen et al. 2016, with the prior std as an annealed parameter.

- KL: posterior q = N(mu, (noise * sigma)^2) (z = mu + sigma * eps, eps ~ N(0, noise^2), as in the film),
  prior p = N(0, noise^2). Per latent dimension KL = -log sigma + (sigma^2 - 1) / 2 + mu^2 / (2 noise^2),
  averaged over dimensions and batch (the film averaged too).
- similarity: mean squared distance between discriminator features of input and reconstruction, the mean
  over each configured layer's elements, averaged over layers (a sum over ~150k features explodes).
- GAN: binary cross-entropy on logits of real (label 1), reconstructed and prior-sampled (label 0) images.
- pixel: mean absolute error of the reconstruction (not in Larsen et al.; anchors colour and layout, and
  leads the CPU recipe's first phase, when the discriminator has not joined yet).
- structure: 1 - SSIM of the reconstruction (Wang et al. 2004, the window autoencoded.metrics scores with),
  differentiable. L1 alone settles on the blur that minimises it; SSIM pays for local contrast and edges,
  the "mixed L1 + SSIM" loss of Zhao et al. 2017 ("Loss functions for image restoration with neural
  networks").
- saturation: the mean square of the encoder's pre-tanh mean beyond +-SATURATION_KNEE. The noise of the
  early training makes the encoder push its tanh to +-1 (a bit survives any noise), where its gradient
  vanishes: measured on the trailer, 97% of mu's were past 0.95 with |pre-tanh| ~12 after 8 CPU minutes,
  a 128-bit code that no later step can refine and that flips instead of moving when the input moves.
- KL scaled by noise^2 (`kl_noise_scaled`): the film's KL pulls mu toward 0 as 1/noise^2 while the noise
  is lowered, so at noise 0.05 it weighs 400x what it did at 1 and squeezes the latent. Times noise^2 its
  pull on mu stays mu^2 / 2 whatever the noise, and lowering the noise only sharpens the posterior, which
  is what the film lowered it for: that similar frames separate.

`VAEGANLoss` puts them together into the three networks' objectives and names every term, so the loop
logs whatever it returns and a new term is one line here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

SATURATION_KNEE = 1.5  # tanh(1.5) = 0.905: past it the gradient through the tanh is below 0.18


def saturation(pre_mu: torch.Tensor) -> torch.Tensor:
    return F.relu(pre_mu.float().abs() - SATURATION_KNEE).pow(2).mean()


def kl_divergence(mu: torch.Tensor, log_sigma: torch.Tensor, noise: float, noise_scaled: bool = False) -> torch.Tensor:
    n2 = max(float(noise), 1e-4) ** 2
    mu = mu.float()
    log_sigma = log_sigma.float()
    kl = (-log_sigma + 0.5 * (torch.exp(2 * log_sigma) - 1.0) + mu.pow(2) / (2 * n2)).mean()
    return kl * n2 if noise_scaled else kl


def _gaussian_taps(device, dtype) -> torch.Tensor:
    g = torch.exp(-(torch.arange(11, dtype=torch.float32) - 5.0) ** 2 / (2 * 1.5**2))
    return (g / g.sum()).to(device=device, dtype=dtype)


def structural_similarity(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean SSIM of two image batches in [-1, 1] (N,C,H,W), per channel with an 11x11 Gaussian window of
    sigma 1.5 over the valid region: autoencoded.metrics' figure, in torch so that it can be trained on.
    The window is separable, so it runs as a column pass and a row pass (22 taps instead of 121)."""
    x = (x.float() + 1) / 2
    y = (y.float() + 1) / 2
    c = x.shape[1]
    g = _gaussian_taps(x.device, x.dtype)
    col = g.view(1, 1, 11, 1).expand(c, 1, 11, 1)
    row = g.view(1, 1, 1, 11).expand(c, 1, 1, 11)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, col, groups=c), row, groups=c)

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    return (((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))).mean()


def similarity(feats_real: list[torch.Tensor], feats_recon: list[torch.Tensor], layers) -> torch.Tensor:
    terms = [F.mse_loss(feats_recon[i].float(), feats_real[i].detach().float()) for i in layers]
    return torch.stack(terms).mean()


def bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


@dataclass
class Balance:
    """The equilibrium/margin rule (Larsen et al.): which updates to make this step."""

    train_dis: bool
    train_dec_gan: bool


def balance(bce_real: float, bce_fake: float, equilibrium: float = 0.68, margin: float = 0.35,
            enabled: bool = True) -> Balance:
    """Skip the discriminator when it wins by the margin (either cost below eq - margin); drop the decoder's
    GAN term when the discriminator loses badly (either cost above eq + margin); if both would be skipped,
    do both."""
    if not enabled:
        return Balance(True, True)
    train_dis = not (bce_real < equilibrium - margin or bce_fake < equilibrium - margin)
    train_dec = not (bce_real > equilibrium + margin or bce_fake > equilibrium + margin)
    if not train_dis and not train_dec:
        return Balance(True, True)
    return Balance(train_dis, train_dec)


@dataclass
class DiscriminatorOutputs:
    """The discriminator's logits on real, reconstructed and prior-sampled images, and its features of the
    real and reconstructed ones (each a list over its conv layers)."""

    real: torch.Tensor
    recon: torch.Tensor
    prior: torch.Tensor
    feats_real: list[torch.Tensor]
    feats_recon: list[torch.Tensor]


@dataclass
class Objectives:
    encoder: torch.Tensor
    decoder: torch.Tensor
    discriminator: torch.Tensor | None  # None while the discriminator has not joined
    terms: dict[str, torch.Tensor] = field(default_factory=dict)  # every named term, for the logs
    # the encoder's objective differs from the decoder's only by terms the decoder does not touch (KL), so
    # one backward pass of the encoder's objective gives the decoder's gradients too
    decoder_shares_encoder: bool = False


@dataclass
class VAEGANLoss:
    """The VAE-GAN objective (Larsen et al. 2016) with pixel anchors, as the three networks' losses:
    - encoder: kl_weight x KL + sim_weight x similarity + pixel_weight x pixel + ssim_weight x structure
      + saturation_weight x saturation (of `pre_mu`, the encoder's mean before its tanh)
    - decoder: gamma x similarity + pixel_weight x pixel + ssim_weight x structure + gan_weight x GAN (when
      the balance allows)
    - discriminator: (BCE real + BCE recon + BCE prior) / 3
    Without discriminator outputs (the pixel-led phase) the similarity and GAN terms are absent."""

    kl_weight: float
    sim_weight: float
    gamma: float
    pixel_weight: float
    gan_weight: float
    sim_layers: tuple[int, ...]
    ssim_weight: float = 0.0
    kl_noise_scaled: bool = False
    saturation_weight: float = 0.0

    def __call__(self, x: torch.Tensor, recon: torch.Tensor, mu: torch.Tensor, log_sigma: torch.Tensor,
                 noise: float, dis: DiscriminatorOutputs | None = None, decoder_gan: bool = True,
                 pre_mu: torch.Tensor | None = None) -> Objectives:
        kl = kl_divergence(mu, log_sigma, noise, self.kl_noise_scaled)
        pix = (recon.float() - x.float()).abs().mean()
        terms = {"kl": kl, "pix": pix}
        rec = self.pixel_weight * pix
        if self.ssim_weight:
            structure = 1.0 - structural_similarity(recon, x)
            terms["structure"] = structure
            rec = rec + self.ssim_weight * structure
        enc = self.kl_weight * kl + rec
        if self.saturation_weight and pre_mu is not None:
            terms["saturation"] = saturation(pre_mu)
            enc = enc + self.saturation_weight * terms["saturation"]
        dec = rec
        if dis is None:
            terms.update(enc=enc, dec=dec, rec=rec)
            return Objectives(enc, dec, None, terms, decoder_shares_encoder=True)
        sim = similarity(dis.feats_real, dis.feats_recon, self.sim_layers)
        b_real, b_rec, b_prior = bce(dis.real, 1.0), bce(dis.recon, 0.0), bce(dis.prior, 0.0)
        gan_dec = (bce(dis.recon, 1.0) + bce(dis.prior, 1.0)) / 2
        enc = enc + self.sim_weight * sim
        dec = dec + self.gamma * sim
        if decoder_gan:
            dec = dec + self.gan_weight * gan_dec
        dis_loss = (b_real + b_rec + b_prior) / 3
        terms.update(sim=sim, bce_real=b_real, bce_recon=b_rec, bce_prior=b_prior, gan_dec=gan_dec, enc=enc,
                     dec=dec, dis=dis_loss, rec=self.sim_weight * sim + rec)
        return Objectives(enc, dec, dis_loss, terms)
