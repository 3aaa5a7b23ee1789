"""Losses of the VAE-GAN after Larsen et al. 2016, with the prior std as an annealed parameter.

- KL: posterior q = N(mu, (noise * sigma)^2) (z = mu + sigma * eps, eps ~ N(0, noise^2), as in the film),
  prior p = N(0, noise^2). Per latent dimension KL = -log sigma + (sigma^2 - 1) / 2 + mu^2 / (2 noise^2),
  averaged over dimensions and batch (the film averaged too).
- similarity: mean squared distance between discriminator features of input and reconstruction, the mean
  over each configured layer's elements, averaged over layers (a sum over ~150k features explodes).
- GAN: binary cross-entropy on logits of real (label 1), reconstructed and prior-sampled (label 0) images.
"""

from __future__ import annotations

from dataclasses import dataclass

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
