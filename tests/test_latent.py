"""LatentFX: noise amount/drift/seed, smoothing, freeze, cues, NaN safety; dry_wet (live/loop/compose.py)."""

from __future__ import annotations

import numpy as np
import pytest

from autoencoded.live.control.latent import EFFECTS, LatentFX
from autoencoded.live.control.params import Params, ParamStore
from autoencoded.live.loop.compose import dry_wet

Z = 32


def latents(n: int = 1, seed: int = 0):
    rng = np.random.default_rng(seed)
    mu = rng.standard_normal((n, Z)).astype(np.float32)
    log_sigma = rng.uniform(-1.0, 0.0, (n, Z)).astype(np.float32)
    return mu, log_sigma


def test_noise_zero_returns_exactly_mu_whatever_else_moves():
    fx = LatentFX(Z)
    for i in range(5):
        mu, ls = latents(3, seed=i)
        out = fx(mu, ls, Params(noise=0.0, noise_drift=1.0, noise_seed=i))
        assert out.dtype == np.float32 and out.shape == mu.shape
        np.testing.assert_array_equal(out, mu)


def test_noise_scales_with_amount_max_and_sigma():
    mu, ls = latents()
    a = LatentFX(Z)(mu, ls, Params(noise=0.5, noise_max=1.0, noise_drift=0.0)) - mu
    b = LatentFX(Z)(mu, ls, Params(noise=1.0, noise_max=2.0, noise_drift=0.0)) - mu
    np.testing.assert_allclose(b, 4 * a, rtol=1e-5, atol=1e-6)
    eps = a / (0.5 * np.exp(ls))
    assert 0.5 < float(np.std(eps)) < 1.5  # a unit Gaussian pattern


def test_drift_zero_keeps_the_pattern_and_drift_one_renews_it():
    mu, ls = latents()
    p = Params(noise=1.0, noise_drift=0.0)
    fx = LatentFX(Z)
    first = fx(mu, ls, p)
    for _ in range(5):
        np.testing.assert_array_equal(fx(mu, ls, p), first)
    q = Params(noise=1.0, noise_drift=1.0)
    fx = LatentFX(Z)
    frames = [fx(mu, ls, q) - mu for _ in range(4)]
    for x, y in zip(frames, frames[1:], strict=False):
        assert abs(float(np.corrcoef(x.ravel(), y.ravel())[0, 1])) < 0.6


def test_small_drift_evolves_slowly_and_keeps_unit_variance():
    mu, ls = latents()
    fx = LatentFX(4096)
    mu4, ls4 = np.zeros((1, 4096), np.float32), np.zeros((1, 4096), np.float32)
    p = Params(noise=1.0, noise_drift=0.1)
    a = fx(mu4, ls4, p)
    b = fx(mu4, ls4, p)
    assert float(np.corrcoef(a.ravel(), b.ravel())[0, 1]) > 0.98
    for _ in range(200):
        c = fx(mu4, ls4, p)
    assert 0.9 < float(np.std(c)) < 1.1


def test_seed_change_reseeds_reproducibly():
    mu, ls = latents()
    p7 = Params(noise=1.0, noise_drift=0.0, noise_seed=7)
    a = LatentFX(Z)(mu, ls, p7)
    fx = LatentFX(Z)
    base = fx(mu, ls, Params(noise=1.0, noise_drift=0.0))
    b = fx(mu, ls, p7)
    assert not np.allclose(a, base)
    np.testing.assert_array_equal(a, b)  # same seed, same pattern, whatever came before


def test_freeze_holds_the_latent_until_released():
    fx = LatentFX(Z)
    mu0, ls = latents(seed=0)
    first = fx(mu0, ls, Params())
    held = [fx(latents(seed=i)[0], ls, Params(freeze=True)) for i in range(1, 5)]
    for h in held:
        np.testing.assert_array_equal(h, first)
    mu9, _ = latents(seed=9)
    np.testing.assert_array_equal(fx(mu9, ls, Params(freeze=False)), mu9)


def test_smoothing_is_an_exponential_moving_average():
    fx = LatentFX(Z)
    _, ls = latents()
    a = np.zeros((1, Z), np.float32)
    b = np.ones((1, Z), np.float32)
    p = Params(smooth=0.75)
    np.testing.assert_array_equal(fx(a, ls, p), a)
    np.testing.assert_allclose(fx(b, ls, p), 0.25 * b)
    np.testing.assert_allclose(fx(b, ls, p), 0.4375 * b)
    np.testing.assert_allclose(LatentFX(Z)(b, ls, Params(smooth=0.0)), b)


def test_cue_store_and_recall_with_mix():
    store = ParamStore()
    fx = LatentFX(Z)
    _, ls = latents()
    a = np.full((1, Z), 2.0, np.float32)
    b = np.full((1, Z), -2.0, np.float32)
    assert store.press("cue/store", 5)
    fx(a, ls, store.snapshot())  # stores a into cue 5
    fx(b, ls, store.snapshot())  # drained: cue 5 stays a
    store.update({"cue/recall": 5, "cue/mix": 1.0})
    np.testing.assert_array_equal(fx(b, ls, store.snapshot()), a)
    store.set("cue/mix", 0.25)
    np.testing.assert_allclose(fx(b, ls, store.snapshot()), 0.75 * b + 0.25 * a)
    store.set("cue/recall", 6)  # an empty slot changes nothing
    np.testing.assert_array_equal(fx(b, ls, store.snapshot()), b)
    store.set("cue/recall", -1)
    np.testing.assert_array_equal(fx(b, ls, store.snapshot()), b)


def test_nan_and_inf_latents_never_reach_the_decoder():
    fx = LatentFX(Z)
    mu, ls = latents()
    mu[0, :3] = [np.nan, np.inf, -np.inf]
    ls[0, 3:6] = [np.nan, 500.0, -np.inf]
    out = fx(mu, ls, Params(noise=1.0, noise_max=4.0, smooth=0.5))
    assert np.isfinite(out).all()
    out2 = fx(mu, ls, Params(noise=1.0, noise_max=4.0, smooth=0.5))
    assert np.isfinite(out2).all()


def test_latent_size_change_resets_state():
    fx = LatentFX(Z)
    mu, ls = latents()
    fx(mu, ls, Params(freeze=True))
    mu2 = np.ones((2, 8), np.float32)
    np.testing.assert_array_equal(fx(mu2, np.zeros_like(mu2), Params()), mu2)
    assert fx.z_dim == 8


def test_dry_wet():
    model = np.full((4, 4, 3), 200, np.uint8)
    cam = np.full((4, 4, 3), 100, np.uint8)
    assert dry_wet(model, cam, 1.0) is model
    assert dry_wet(model, cam, 0.0) is cam
    out = dry_wet(model, cam, 0.25)
    assert out.dtype == np.uint8 and (out == 125).all()


@pytest.mark.parametrize("rows", [1, 4])
def test_batches_are_consecutive_frames(rows):
    mu, ls = latents(rows)
    out = LatentFX(Z)(mu, ls, Params(noise=1.0, noise_drift=0.0))
    assert out.shape == (rows, Z)
    # with drift 0 every row gets the same pattern
    d = (out - mu) / np.exp(ls)
    for r in range(1, rows):
        np.testing.assert_allclose(d[r], d[0], rtol=1e-4, atol=1e-5)


def test_is_identity_reads_every_effect():
    """fused_ok had to name every effect by hand; is_identity reads EFFECTS, so none can be skipped."""
    on = {"memory": Params(memory=0.1), "noise": Params(noise=0.1), "smooth": Params(smooth=0.1),
          "freeze": Params(freeze=True), "cue/store": Params(cue_store=(1,)), "cue/recall": Params(cue_recall=0)}
    assert {e.name for e in EFFECTS} == set(on)
    assert LatentFX.is_identity(Params(noise_drift=1.0, noise_seed=5, noise_max=4.0, cue_mix=0.5, mix=0.2))
    for name, p in on.items():
        assert not LatentFX.is_identity(p), name
    fx = LatentFX(8)
    mu = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    assert np.array_equal(fx(mu, np.zeros_like(mu), Params()), mu)  # identity: the encoder's own latent
