"""Training augmentation (training/augment.py): what the encoder sees and what the decoder is asked for."""

from __future__ import annotations

import json

import pytest
import torch

from autoencoded.training.augment import Augmentation, degrade, recompose
from autoencoded.training.config import TrainConfig, resolve


def _batch(n: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # smooth colour fields with a bright square: a layout that geometry visibly moves
    x = torch.rand(n, 3, 1, 1, generator=g).expand(n, 3, 36, 64).clone() * 1.6 - 0.8
    x[:, :, 8:20, 10:30] = 1.0
    return x


def test_all_plain_is_the_batch_itself():
    x = _batch()
    inp, target = Augmentation(plain=1.0, degrade=1.0)(x, torch.Generator().manual_seed(1))
    assert inp is x and target is x


def test_geometry_moves_input_and_target_together_and_leaves_the_batch_alone():
    x = _batch()
    before = x.clone()
    inp, target = Augmentation(plain=0.0, degrade=0.0)(x, torch.Generator().manual_seed(1))
    assert torch.equal(x, before)
    assert torch.equal(inp, target)
    assert target.shape == x.shape
    assert float(target.min()) >= -1.0 - 1e-5 and float(target.max()) <= 1.0 + 1e-5
    moved = (target - x).abs().flatten(1).amax(dim=1)
    assert int((moved > 0.1).sum()) >= 12  # crops, flips and rotations change almost every sample


def test_degraded_inputs_keep_the_clean_target():
    x = _batch()
    aug = Augmentation(plain=0.0, degrade=1.0)
    inp, target = aug(x, torch.Generator().manual_seed(2))
    _, geometry_only = Augmentation(plain=0.0, degrade=0.0)(x, torch.Generator().manual_seed(2))
    assert torch.equal(target, geometry_only)  # the same draws recompose the target either way
    assert not torch.equal(inp, target)


def test_the_same_seed_augments_the_same_way():
    x = _batch()
    a = Augmentation(plain=0.25, degrade=0.5)
    first = a(x, torch.Generator().manual_seed(5))
    second = a(x, torch.Generator().manual_seed(5))
    other = a(x, torch.Generator().manual_seed(6))
    assert all(torch.equal(p, q) for p, q in zip(first, second, strict=True))
    assert not torch.equal(first[1], other[1])


def test_plain_fraction_is_respected_over_many_batches():
    x = _batch(64)
    kept = 0
    for seed in range(8):
        _, target = Augmentation(plain=0.5, degrade=0.0)(x, torch.Generator().manual_seed(seed))
        kept += int(((target - x).abs().flatten(1).amax(dim=1) == 0).sum())
    assert 0.4 < kept / (8 * 64) < 0.6


def test_degradations_include_grey_inputs_and_stay_in_range():
    x = _batch(256)
    out = degrade(x, torch.Generator().manual_seed(3))
    assert float(out.min()) >= -1.0 and float(out.max()) <= 1.0
    grey = (out[:, 0] - out[:, 1]).abs().amax(dim=(1, 2)) + (out[:, 1] - out[:, 2]).abs().amax(dim=(1, 2))
    share = float((grey < 1e-5).float().mean())
    assert 0.2 < share < 0.5  # P_GREY of the degraded samples, within sampling error


@pytest.mark.parametrize("grey, low, high", [(0.0, 0.0, 0.0), (0.35, 0.2, 0.5), (1.0, 0.6, 0.9)])
def test_the_grey_share_is_a_knob(grey, low, high):
    out = degrade(_batch(256), torch.Generator().manual_seed(3), grey)
    spread = (out[:, 0] - out[:, 1]).abs().amax(dim=(1, 2)) + (out[:, 1] - out[:, 2]).abs().amax(dim=(1, 2))
    # sensor noise (P_NOISE of them) is per channel, so it colours a grey input again
    assert low <= float((spread < 1e-5).float().mean()) <= high


def test_a_run_saved_before_the_grey_knob_keeps_its_grey_share():
    saved = json.loads(resolve(TrainConfig(arch="dream", augment_grey=0.7)).to_json())
    assert saved["augment_grey"] == 0.7
    saved.pop("augment_grey")
    assert TrainConfig.from_dict(saved).augment_grey == 0.35


def test_rotation_keeps_a_round_spot_round_on_a_wide_frame():
    # a plain rotation matrix in affine_grid's per-axis coordinates would shear a 16:9 frame
    h, w = 72, 128
    yy, xx = torch.meshgrid(torch.arange(h) - h / 2 + 0.5, torch.arange(w) - w / 2 + 0.5, indexing="ij")
    spot = ((xx**2 + yy**2) < 15**2).float() * 2 - 1
    x = spot.expand(32, 3, h, w).clone()
    out = recompose(x, torch.Generator().manual_seed(4))
    for img in out[:, 0]:
        mask = img > 0
        if mask.sum() < 50 or mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any():
            continue
        ys, xs = torch.nonzero(mask, as_tuple=True)
        cov = torch.cov(torch.stack([xs.float(), ys.float()]))
        ev = torch.linalg.eigvalsh(cov)
        # crops change the aspect by at most 4:3, so an ellipse, but never the 16:9 shear of a wrong matrix
        assert float(ev[1] / ev[0]) < (4 / 3) ** 2 * 1.15


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan")])
def test_fractions_outside_0_1_are_refused(value):
    with pytest.raises(ValueError, match="between 0 and 1"):
        Augmentation(plain=value)


def test_lite_augments_by_default_and_broad2016_takes_it_as_a_flag():
    lite = resolve(TrainConfig(arch="lite"))
    film = resolve(TrainConfig(arch="broad2016"))
    flagged = resolve(TrainConfig(arch="broad2016", augment=True))
    assert lite.augment is True and film.augment is False and flagged.augment is True
    assert 0 < lite.augment_plain < 1 and 0 < lite.augment_degrade <= 1


def test_a_run_saved_before_augmentation_resumes_without_it():
    saved = json.loads(resolve(TrainConfig(arch="lite")).to_json())
    for key in ("augment", "augment_plain", "augment_degrade"):
        saved.pop(key)
    cfg = TrainConfig.from_dict(saved)
    assert cfg.augment is False
