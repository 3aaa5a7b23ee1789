"""The dream: the figures that say what latent noise does to the picture, on inputs whose answer is known,
and a real train -> export -> render in which noise 1 changes the picture without turning it to static."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from autoencoded import metrics
from autoencoded.live.control.latent import LatentFX
from autoencoded.live.control.params import Params
from autoencoded.live.dream import DreamTally, learned_share
from autoencoded.live.engines import open_engine
from autoencoded.posterior import LatentPlan, Posterior
from autoencoded.training.config import TrainConfig, resolve
from autoencoded.training.data import open_dataset
from autoencoded.training.loop import Trainer

from helpers import cli, make_dataset, read_video, synthetic_frame, write_video


def picture(i: int = 0, w: int = 128, h: int = 72) -> np.ndarray:
    return synthetic_frame(i, w, h)


def test_iid_noise_scores_as_static_and_a_blur_as_soft():
    frames = np.stack([picture(i) for i in range(4)])
    static = np.random.default_rng(0).integers(0, 256, frames.shape, dtype=np.uint8)
    soft = np.stack([cv2.GaussianBlur(f, (0, 0), 3) for f in frames])
    assert metrics.sharpness(static) > 10 * metrics.sharpness(frames)
    assert metrics.sharpness(soft) < metrics.sharpness(frames)


def test_change_is_zero_for_a_copy_and_the_shift_for_a_brightness_shift():
    frames = np.stack([picture(i) for i in range(3)]).clip(0, 200).astype(np.uint8)
    assert metrics.change(frames, frames.copy()) == 0.0
    assert metrics.change(frames, frames + 20) == pytest.approx(20.0)
    assert metrics.change(frames[0], frames[0] + 7) == pytest.approx(7.0)


def test_the_posterior_noises_only_its_learned_entries_and_the_same_in_numpy_and_torch():
    rng = np.random.default_rng(1)
    mean, log_sigma, eps = (rng.standard_normal((2, 10)).astype(np.float32) for _ in range(3))
    plan = LatentPlan(learned=6, scale=2.0)
    z = Posterior(mean, log_sigma, plan).sample(eps, 0.5)
    np.testing.assert_array_equal(z[:, 6:], mean[:, 6:])  # the computed entries never move
    np.testing.assert_allclose(z[:, :6], mean[:, :6] + 0.5 * 2.0 * np.exp(log_sigma[:, :6]) * eps[:, :6], rtol=1e-6)
    zt = Posterior(*(torch.from_numpy(a) for a in (mean, log_sigma)), plan).sample(torch.from_numpy(eps), 0.5)
    np.testing.assert_allclose(zt.numpy(), z, rtol=1e-6)
    # per-row amounts (training's): row 0 at 0 decodes the mean
    rows = Posterior(mean, log_sigma, plan).sample(eps, np.array([[0.0], [1.0]], np.float32))
    np.testing.assert_array_equal(rows[0], mean[0])


def test_live_noise_plays_the_plan_at_its_scale():
    mu = np.zeros((1, 8), np.float32)
    ls = np.zeros((1, 8), np.float32)
    p = Params(noise=1.0, noise_max=1.0, noise_drift=0.0)
    plain = LatentFX(8, plan=LatentPlan(8, 1.0))(mu, ls, p)
    scaled = LatentFX(8, plan=LatentPlan(4, 3.0))(mu, ls, p)
    np.testing.assert_allclose(scaled[:, :4], 3.0 * plain[:, :4], rtol=1e-6)
    assert not scaled[:, 4:].any()


def test_plan_records_are_checked():
    assert LatentPlan.from_record(None, 12) == LatentPlan(12, 1.0)
    assert LatentPlan.from_record({"learned": 6, "noise_scale": 2, "shape": [1, 2, 3]}, 12).shape == (1, 2, 3)
    for bad in ({"learned": 13}, {"learned": -1}, {"learned": True}, {"learned": 4, "noise_scale": "x"},
                {"learned": 4, "noise_scale": 1e9}, {"learned": 6, "shape": [2, 2]}, []):
        with pytest.raises(ValueError):
            LatentPlan.from_record(bad, 12)


def test_learned_share_sees_whether_the_learned_entries_carry_the_picture():
    means = np.stack([np.full(4, float(i), np.float32) for i in range(6)])

    def decode_from_learned(z):  # a decoder that reads the learned entries only
        return np.repeat(np.clip(z[:, :2] * 40, 0, 255).astype(np.uint8)[:, None, None, :1], 3, axis=3)

    def decode_from_rest(z):  # one that reads only what bypasses them
        return np.repeat(np.clip(z[:, 2:] * 40, 0, 255).astype(np.uint8)[:, None, None, :1], 3, axis=3)

    plan = LatentPlan(2)
    assert learned_share(means, decode_from_learned, plan) > 50
    assert learned_share(means, decode_from_rest, plan) == 0.0


@pytest.fixture(scope="module")
def dreaming_pack(tmp_path_factory):
    """A tiny spatial-code model trained for real with the dream share, then exported."""
    root = tmp_path_factory.mktemp("dream")
    ds = make_dataset(root / "ds", n=32, width=64, height=48)
    tiny = {"enc_channels": [8, 16, 16, 32], "disc_channels": [8, 16, 16, 32], "dec_channels": [32, 16, 16, 8],
            "latent_channels": 4, "latent_scale": 1, "bounded_latent": False}
    cfg = resolve(TrainConfig(dataset=str(ds), out=str(root / "run"), arch="lite", width=64, height=48, steps=40,
                              batch=8, checkpoint_every=40, device="cpu", z_dim=48, layout=False, dream_share=1.0,
                              kl_weight=0.01, kl_noise_scaled=False, noise_start=1.0, noise_end=1.0,
                              model_overrides=tiny))
    Trainer(cfg, open_dataset(ds), progress=False).run()
    assert cli("export", root / "run", "-o", root / "pack") == 0
    return root


def test_an_exported_pack_says_which_entries_live_noise_plays(dreaming_pack):
    meta = json.loads((dreaming_pack / "pack" / "model.json").read_text())
    assert meta["latent"] == {"learned": 4 * 3 * 4, "noise_scale": 1.0, "shape": [4, 3, 4]}
    engine = open_engine(str(dreaming_pack / "pack"), backend="onnxruntime")
    try:
        assert engine.latent_plan() == LatentPlan(48, 1.0, (4, 3, 4))
    finally:
        engine.close()


def test_noise_one_on_a_trained_tiny_model_changes_the_picture_and_is_not_static(dreaming_pack, tmp_path):
    clip = write_video(tmp_path / "in.mp4", n_frames=24, width=64, height=48)
    outs = {}
    for n in ("0", "1"):
        out = tmp_path / f"noise-{n}.mp4"
        assert cli("render", clip, out, "--model", dreaming_pack / "pack", "--noise", n, "--crop", "none") == 0
        outs[n] = np.stack(read_video(out))
    film = np.load(dreaming_pack / "ds" / "frames.npy")
    assert metrics.change(outs["0"], outs["1"]) > 3.0  # the knob moves the picture
    assert metrics.sharpness(outs["1"]) < metrics.sharpness(film)  # a picture, not static


def test_dream_tally_on_a_real_engine(dreaming_pack):
    engine = open_engine(str(dreaming_pack / "pack"), backend="onnxruntime")
    try:
        frames = np.load(dreaming_pack / "ds" / "frames.npy")
        tally = DreamTally(engine.encode, engine.decode, engine.latent_plan(), engine.z_dim, len(frames))
        for i in range(0, len(frames), 8):
            tally.add(frames[i:i + 8])
        d = tally.figures(metrics.sharpness(frames))
    finally:
        engine.close()
    assert 0 < d["change"]["0.5"] < d["change"]["1.0"]
    assert d["sharpness_ratio"] is not None and d["warp_error_noise_05"] is not None
    assert d["learned_share"] > 0  # nothing bypasses a spatial code
