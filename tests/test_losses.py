"""Losses, the balance rule and the noise schedule."""

from __future__ import annotations

import math

import pytest
import torch

from autoencoded.training.losses import balance, bce, kl_divergence, similarity
from autoencoded.training.schedules import noise_at


def test_kl_is_zero_when_posterior_equals_the_annealed_prior():
    mu = torch.zeros(4, 8)
    log_sigma = torch.zeros(4, 8)  # q = N(0, (noise * 1)^2) = prior N(0, noise^2)
    for noise in (1.0, 0.3, 0.1):
        assert kl_divergence(mu, log_sigma, noise).item() == pytest.approx(0.0, abs=1e-7)


def test_kl_mean_term_scales_with_the_prior_std():
    mu = torch.full((2, 4), 0.5)
    log_sigma = torch.zeros(2, 4)
    # per dimension mu^2 / (2 noise^2)
    assert kl_divergence(mu, log_sigma, 1.0).item() == pytest.approx(0.125)
    assert kl_divergence(mu, log_sigma, 0.5).item() == pytest.approx(0.5)
    # a narrower posterior than the prior costs -log sigma + (sigma^2 - 1) / 2
    ls = torch.full((2, 4), math.log(0.5))
    assert kl_divergence(torch.zeros(2, 4), ls, 0.2).item() == pytest.approx(-math.log(0.5) + (0.25 - 1) / 2)


def test_similarity_is_the_mean_over_layers_of_mean_squared_feature_distance():
    a = [torch.zeros(2, 3, 4, 4), torch.zeros(2, 5, 2, 2)]
    b = [torch.ones(2, 3, 4, 4), torch.full((2, 5, 2, 2), 3.0)]
    assert similarity(a, b, (0, 1)).item() == pytest.approx((1.0 + 9.0) / 2)
    assert similarity(a, b, (1,)).item() == pytest.approx(9.0)
    # averaged, not summed: a huge feature map does not make it explode
    big = [torch.zeros(2, 64, 72, 128)]
    assert similarity(big, [torch.ones_like(big[0])], (0,)).item() == pytest.approx(1.0)


def test_bce_on_logits():
    assert bce(torch.tensor([0.0, 0.0]), 1.0).item() == pytest.approx(math.log(2))
    assert bce(torch.tensor([20.0]), 1.0).item() < 1e-6


def test_balance_rule():
    # balanced: both updates
    b = balance(0.7, 0.7)
    assert b.train_dis and b.train_dec_gan
    # discriminator wins by the margin: skip its update
    b = balance(0.1, 0.7)
    assert not b.train_dis and b.train_dec_gan
    # discriminator loses badly: drop the decoder's GAN term
    b = balance(1.5, 0.7)
    assert b.train_dis and not b.train_dec_gan
    # both would be skipped: do both
    b = balance(0.1, 1.5)
    assert b.train_dis and b.train_dec_gan
    b = balance(0.1, 0.1, enabled=False)
    assert b.train_dis and b.train_dec_gan


@pytest.mark.parametrize("kind", ["linear", "cosine", "step"])
def test_noise_schedule_runs_from_start_to_end_monotonically(kind):
    vals = [noise_at(s, 101, 1.0, 0.1, kind) for s in range(101)]
    assert vals[0] == pytest.approx(1.0)
    assert vals[-1] == pytest.approx(0.1)
    assert all(a >= b - 1e-12 for a, b in zip(vals, vals[1:], strict=False))
    if kind == "step":
        assert len(set(round(v, 9) for v in vals)) == 4
    if kind == "linear":
        assert vals[50] == pytest.approx(0.55)


def test_noise_schedule_rejects_unknown_kind():
    with pytest.raises(ValueError):
        noise_at(0, 10, 1.0, 0.1, "exp")
