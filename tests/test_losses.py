"""Losses, the balance rule and the noise schedule."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from autoencoded import metrics
from autoencoded.training.losses import (
    VAEGANLoss,
    balance,
    bce,
    kl_divergence,
    saturation,
    similarity,
    structural_similarity,
)
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


def test_noise_scaled_kl_pulls_mu_the_same_at_every_noise():
    mu = torch.full((2, 4), 0.5, requires_grad=True)
    log_sigma = torch.zeros(2, 4)
    pulls = []
    for noise in (1.0, 0.3, 0.05):
        (grad,) = torch.autograd.grad(kl_divergence(mu, log_sigma, noise, noise_scaled=True), mu)
        pulls.append(float(grad[0, 0]))
        # the plain KL pulls 1/noise^2 harder: 400x at the demo's last noise
        (plain,) = torch.autograd.grad(kl_divergence(mu, log_sigma, noise), mu)
        assert float(plain[0, 0]) == pytest.approx(pulls[-1] / noise**2)
    assert pulls == pytest.approx([0.5 / 8] * 3)  # d/dmu of mean(mu^2 / 2) over 8 elements


def _batch(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1


def test_structural_similarity_is_the_figure_eval_reports_and_can_be_trained_on():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 72, 128, 3), dtype=np.uint8)
    frames = np.stack([cv2.GaussianBlur(f, (0, 0), 2) for f in frames])  # some structure to keep or lose
    blurred = np.stack([cv2.GaussianBlur(f, (0, 0), 3) for f in frames])
    got = structural_similarity(_batch(blurred), _batch(frames)).item()
    # metrics pads the border, the loss uses the valid region: the same figure to the second decimal
    assert got == pytest.approx(metrics.compare(frames, blurred)["ssim"], abs=0.01)
    assert structural_similarity(_batch(frames), _batch(frames)).item() == pytest.approx(1.0, abs=1e-5)
    # a gradient step on 1 - SSIM brings a blurred image closer to the original's structure
    y = _batch(blurred).requires_grad_(True)
    (grad,) = torch.autograd.grad(1 - structural_similarity(y, _batch(frames)), y)
    stepped = (y - 50 * grad).detach()
    assert structural_similarity(stepped, _batch(frames)).item() > got + 0.01


# lite's weights, given by keyword as the loop gives them (training/config.py's loss_settings)
WEIGHTS = dict(kl_weight=1e-3, sim_weight=0.1, gamma=0.1, pixel_weight=1.0, gan_weight=0.01)


def test_the_structure_term_is_named_and_weighed_in_the_reconstruction():
    x = torch.rand(2, 3, 32, 48) * 2 - 1
    recon = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1)
    mu, log_sigma = torch.zeros(2, 8), torch.zeros(2, 8)
    plain = VAEGANLoss((0,), **WEIGHTS)(x, recon, mu, log_sigma, 0.3)
    mixed = VAEGANLoss((0,), **WEIGHTS, ssim_weight=0.5)(x, recon, mu, log_sigma, 0.3)
    assert "structure" not in plain.terms
    structure = 1 - structural_similarity(recon, x)
    assert mixed.terms["structure"].item() == pytest.approx(structure.item())
    assert mixed.terms["rec"].item() == pytest.approx(plain.terms["rec"].item() + 0.5 * structure.item())
    assert mixed.decoder.item() == pytest.approx(mixed.terms["rec"].item())


def test_the_saturation_penalty_reaches_a_saturated_tanh_that_the_kl_cannot():
    pre = torch.tensor([[0.5, -1.0, 6.0, -12.0]], requires_grad=True)
    mu, log_sigma = torch.tanh(pre), torch.zeros(1, 4)
    loss = VAEGANLoss((0,), **WEIGHTS, kl_noise_scaled=True, saturation_weight=0.1)
    obj = loss(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8), mu, log_sigma, 0.05, pre_mu=pre)
    assert obj.terms["saturation"].item() == pytest.approx(((6 - 1.5) ** 2 + (12 - 1.5) ** 2) / 4)
    (grad,) = torch.autograd.grad(obj.encoder, pre)
    assert grad[0, 0] != 0 and abs(grad[0, 0]) < 1e-3  # inside the knee only the small KL pulls
    assert grad[0, 2] > 0.1 and grad[0, 3] < -0.1  # past it: back toward the knee, hard
    # without the penalty the saturated entries get next to nothing: the tanh swallows the KL's pull
    plain = VAEGANLoss((0,), **WEIGHTS, kl_noise_scaled=True)
    obj = plain(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8), torch.tanh(pre), log_sigma, 0.05, pre_mu=pre)
    assert "saturation" not in obj.terms
    (grad,) = torch.autograd.grad(obj.encoder, pre)
    assert abs(grad[0, 3]) < 1e-9
    assert saturation(torch.tensor([1.4, -1.5])).item() == 0.0


def test_the_encoder_gives_its_mean_before_the_bound_for_the_penalty():
    from autoencoded.training.model import Encoder, ModelConfig

    cfg = ModelConfig.preset("lite", 64, 48)
    enc = Encoder(cfg).eval()
    x = torch.rand(2, 3, 48, 64) * 2 - 1
    with torch.no_grad():
        pre_mu, pre_log_sigma = enc(x, raw=True)
        mu, log_sigma = enc(x)
    code = slice(0, cfg.z_dim)  # the learned code; the layout follows it (test_model.py)
    assert torch.equal(torch.tanh(pre_mu), mu[:, code])
    assert torch.equal(0.5 * torch.tanh(pre_log_sigma), log_sigma[:, code])


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


def test_the_one_backward_shortcut_is_taken_only_when_the_decoder_reads_the_same_objective(monkeypatch):
    from autoencoded.training import losses

    x = torch.rand(2, 3, 16, 16) * 2 - 1
    recon = (x + 0.1 * torch.randn_like(x)).clamp(-1, 1)
    mu, log_sigma = torch.zeros(2, 4), torch.zeros(2, 4)

    def shares() -> bool:
        return VAEGANLoss((0,), **WEIGHTS)(x, recon, mu, log_sigma, 0.3).decoder_shares_encoder

    assert shares()  # the pixel-led phase: KL and saturation do not read the decoder, pix weighs the same
    # a term of the encoder's alone that reads only the encoder keeps the shortcut
    code = losses.Knob("code_weight", "Weight of the code's size", default=0.5)
    monkeypatch.setitem(losses.TERMS, "code", losses.Term("code", lambda s: s.mu.abs().mean(), {"encoder": code},
                                                          losses.ENC))
    assert shares()
    # one that reads the reconstruction with a weight of the decoder's own does not: two passes
    edge = losses.Knob("edge_weight", "Weight of the edges", default=0.5)
    monkeypatch.setitem(losses.TERMS, "edge", losses.Term("edge", lambda s: s.recon.diff(dim=-1).abs().mean(),
                                                          {"decoder": edge}, losses.DEC))
    obj = VAEGANLoss((0,), **WEIGHTS)(x, recon, mu, log_sigma, 0.3)
    assert not obj.decoder_shares_encoder
    assert obj.decoder.item() == pytest.approx(obj.terms["rec"].item() + 0.5 * obj.terms["edge"].item())
    with pytest.raises(TypeError, match="unknown loss settings: nope"):
        VAEGANLoss((0,), nope=1.0)
