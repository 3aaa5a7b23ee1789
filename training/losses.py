"""Losses of the VAE-GAN after Larsen et al. 2016, with the prior std as an annealed parameter.

- KL: posterior q = N(mu, (noise * sigma)^2) (z = mu + sigma * eps, eps ~ N(0, noise^2), as in the film),
  prior p = N(0, noise^2). Per latent dimension KL = -log sigma + (sigma^2 - 1) / 2 + mu^2 / (2 noise^2),
  averaged over dimensions and batch (the film averaged too).
- similarity: mean squared distance between discriminator features of input and reconstruction, the mean
  over each configured layer's elements, averaged over layers (a sum over ~150k features explodes).
- GAN: binary cross-entropy on logits of real (label 1), reconstructed and prior-sampled (label 0) images.
- pixel: mean absolute error of the reconstruction (not in Larsen et al.; anchors colour and layout, and
  leads the CPU recipe's first phase, when the discriminator has not joined yet).

`VAEGANLoss` puts them together into the three networks' objectives and names every term, so the loop
logs whatever it returns and a new term is one line here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


def kl_divergence(mu: torch.Tensor, log_sigma: torch.Tensor, noise: float) -> torch.Tensor:
    n2 = max(float(noise), 1e-4) ** 2
    mu = mu.float()
    log_sigma = log_sigma.float()
    kl = -log_sigma + 0.5 * (torch.exp(2 * log_sigma) - 1.0) + mu.pow(2) / (2 * n2)
    return kl.mean()


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


@dataclass
class VAEGANLoss:
    """The VAE-GAN objective (Larsen et al. 2016) with a pixel anchor, as the three networks' losses:
    - encoder: kl_weight x KL + sim_weight x similarity + pixel_weight x pixel
    - decoder: gamma x similarity + pixel_weight x pixel + gan_weight x GAN (when the balance allows)
    - discriminator: (BCE real + BCE recon + BCE prior) / 3
    Without discriminator outputs (the pixel-led phase) the similarity and GAN terms are absent."""

    kl_weight: float
    sim_weight: float
    gamma: float
    pixel_weight: float
    gan_weight: float
    sim_layers: tuple[int, ...]

    def __call__(self, x: torch.Tensor, recon: torch.Tensor, mu: torch.Tensor, log_sigma: torch.Tensor,
                 noise: float, dis: DiscriminatorOutputs | None = None, decoder_gan: bool = True) -> Objectives:
        kl = kl_divergence(mu, log_sigma, noise)
        pix = (recon.float() - x.float()).abs().mean()
        terms = {"kl": kl, "pix": pix}
        enc = self.kl_weight * kl + self.pixel_weight * pix
        dec = self.pixel_weight * pix
        if dis is None:
            terms.update(enc=enc, dec=dec, rec=self.pixel_weight * pix)
            return Objectives(enc, dec, None, terms)
        sim = similarity(dis.feats_real, dis.feats_recon, self.sim_layers)
        b_real, b_rec, b_prior = bce(dis.real, 1.0), bce(dis.recon, 0.0), bce(dis.prior, 0.0)
        gan_dec = (bce(dis.recon, 1.0) + bce(dis.prior, 1.0)) / 2
        enc = enc + self.sim_weight * sim
        dec = dec + self.gamma * sim
        if decoder_gan:
            dec = dec + self.gan_weight * gan_dec
        dis_loss = (b_real + b_rec + b_prior) / 3
        terms.update(sim=sim, bce_real=b_real, bce_recon=b_rec, bce_prior=b_prior, gan_dec=gan_dec, enc=enc,
                     dec=dec, dis=dis_loss, rec=self.sim_weight * sim + self.pixel_weight * pix)
        return Objectives(enc, dec, dis_loss, terms)
