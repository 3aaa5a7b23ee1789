"""autoencoded.training.model: shapes, budgets and the config round trip, on real tiny and full-size networks."""

import json

import pytest
import torch

from autoencoded.training.archs import ARCHS
from autoencoded.training.model import (
    AutoEncoder,
    ModelConfig,
    autoencoder_from_state,
    build,
    count_flops,
    count_params,
    frames_to_input,
    output_to_frames,
)

from helpers import TINY


@pytest.mark.parametrize("arch", ARCHS)
def test_shapes_at_256x144(arch):
    cfg = ModelConfig.preset(arch)
    m = build(cfg).eval()
    x = torch.rand(2, 3, 144, 256) * 2 - 1
    with torch.no_grad():
        mu, log_sigma = m.encoder(x)
        y = m.decoder(mu)
        logits, feats = m.discriminator(x)
    assert mu.shape == log_sigma.shape == (2, cfg.latent_dim)
    assert y.shape == x.shape and y.abs().max() <= 1
    assert logits.shape == (2,) and len(feats) == 4
    assert feats[-1].shape[-2:] == (9, 16)


def test_broad2016_is_faithful_to_the_film():
    cfg = ModelConfig.preset("broad2016")
    assert cfg.enc_channels == (80, 160, 320, 640) and cfg.enc_kernel == 5 and cfg.z_dim == 200
    m = build(cfg)
    convs = [mod for mod in m.encoder.convs.modules() if isinstance(mod, torch.nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(5, 5)] * 4 and all(c.stride == (2, 2) for c in convs)
    assert m.encoder.fc.in_features == 640 * 9 * 16


def test_lite_budget():
    cfg = ModelConfig.preset("lite")
    ae = AutoEncoder(cfg)
    flops = count_flops(ae, torch.zeros(1, 3, 144, 256))
    assert flops <= 1.5e9
    assert count_params(ae) <= 10e6


@pytest.mark.parametrize("size", [(96, 64), (160, 96), (512, 288)])
def test_any_size_divisible_by_16(size):
    w, h = size
    cfg = ModelConfig.preset("lite", width=w, height=h)
    ae = AutoEncoder(cfg).eval()
    with torch.no_grad():
        assert ae(torch.zeros(1, 3, h, w)).shape == (1, 3, h, w)


def test_bad_size_is_refused():
    with pytest.raises(ValueError, match="divisible by 16"):
        ModelConfig.preset("lite", width=250, height=144)


def test_config_round_trip_and_rebuild():
    cfg = ModelConfig.preset("dream", width=96, height=64, latent_channels=4)
    assert cfg.z_dim == 4 * 8 * 12  # a spatial code's size follows from its grid
    assert ModelConfig.from_dict(json.loads(cfg.to_json())) == cfg
    with pytest.raises(ValueError, match="unknown model config keys"):
        ModelConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    full = build(cfg)
    ae = autoencoder_from_state(ModelConfig.from_dict(json.loads(cfg.to_json())), full.state_dict())
    x = torch.rand(1, 3, 64, 96) * 2 - 1
    full.eval()
    with torch.no_grad():
        assert torch.equal(ae(x), full.decoder(full.encoder(x)[0]))


def test_frame_conversion_round_trip():
    frames = torch.randint(0, 256, (3, 64, 96, 3), dtype=torch.uint8)
    x = frames_to_input(frames)
    assert x.shape == (3, 3, 64, 96) and x.min() >= -1 and x.max() <= 1
    assert torch.equal(output_to_frames(x), frames)
    nan = torch.full((1, 3, 4, 4), float("nan"))
    assert output_to_frames(nan).dtype == torch.uint8


# ---- the layout: the input's luma at the bottom grid, carried in the latent --------------------------------

def _block_luma(x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """The reference: BT.601 luma of each pixel, then the plain mean of each grid cell, by loops."""
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    n, h, w = luma.shape
    out = torch.empty(n, rows, cols)
    for r in range(rows):
        for c in range(cols):
            out[:, r, c] = luma[:, r * h // rows:(r + 1) * h // rows, c * w // cols:(c + 1) * w // cols].mean((1, 2))
    return out.flatten(1)


def test_the_latent_ends_with_the_inputs_luma_at_the_bottom_grid():
    cfg = ModelConfig.preset("lite", width=64, height=48, **{**TINY, "layout_scale": 1})
    assert cfg.layout and cfg.bottom == (3, 4) and cfg.latent_dim == cfg.z_dim + 12
    enc = build(cfg).encoder.eval()
    x = torch.rand(2, 3, 48, 64) * 2 - 1
    with torch.no_grad():
        mu, log_sigma = enc(x)
        code, _ = enc.bound(*enc(x, raw=True))
    assert mu.shape == log_sigma.shape == (2, cfg.latent_dim)
    assert torch.allclose(mu[:, cfg.z_dim:], _block_luma(x, 3, 4), atol=1e-5)
    assert torch.equal(log_sigma[:, cfg.z_dim:], torch.zeros(2, 12))  # sigma 1: the live noise plays on it too
    assert torch.equal(mu[:, :cfg.z_dim], code)  # the learned code, as training takes its KL


def test_the_decoder_paints_what_the_layout_says():
    cfg = ModelConfig.preset("lite", width=64, height=48, **TINY)
    dec = build(cfg).decoder.eval()
    z = torch.zeros(2, cfg.latent_dim)
    z[1, cfg.z_dim:] = 0.8  # the same code, a bright layout
    with torch.no_grad():
        y = dec(z)
    assert (y[0] - y[1]).abs().mean() > 1e-3


def test_a_finer_layout_is_the_luma_at_its_grid_and_its_detail_reaches_the_picture():
    """layout_scale 2: the latent carries the 6x8 grid (twice the bottom's 3x4), and two layouts with the same
    3x4 averages (what the FC and the first picture see) still paint differently: the second layer reads it."""
    cfg = ModelConfig.preset("lite", width=64, height=48, **{**TINY, "layout_scale": 2})
    assert cfg.layout_grid == (6, 8) and cfg.latent_dim == cfg.z_dim + 48
    m = build(cfg).eval()
    x = torch.rand(2, 3, 48, 64) * 2 - 1
    with torch.no_grad():
        mu, log_sigma = m.encoder(x)
    assert torch.allclose(mu[:, cfg.z_dim:], _block_luma(x, 6, 8), atol=1e-5)
    assert torch.equal(log_sigma[:, cfg.z_dim:], torch.zeros(2, 48))
    z = torch.zeros(2, cfg.latent_dim)
    checker = (torch.arange(6)[:, None] + torch.arange(8)[None, :]) % 2 * 1.6 - 0.8  # every 2x2 block averages 0
    z[1, cfg.z_dim:] = checker.flatten()
    with torch.no_grad():
        y = m.decoder(z)
    assert (y[0] - y[1]).abs().mean() > 1e-3
    for bad in (3, 32):
        with pytest.raises(ValueError, match="layout_scale"):
            ModelConfig.preset("lite", width=64, height=48, **{**TINY, "layout_scale": bad})


@pytest.mark.parametrize("upsample", ["resize", "deconv"])
def test_the_decoder_padded_for_inference_paints_the_same_picture_from_channels_by_eight(upsample):
    """lite (layout_scale 8): its second, third and fourth layers read the layout picture beside 96, 48 and 24
    channels; the copy export writes gives them 104, 56 and 32 (zeros after the picture, zero weights), the
    same picture, and leaves the decoder it was made from as trained."""
    cfg = ModelConfig.preset("lite", width=64, height=48, **TINY, upsample=upsample)
    dec = build(cfg).decoder.eval()
    before = {k: v.clone() for k, v in dec.state_dict().items()}
    padded = dec.padded_for_inference()
    convs = [next(m for m in layer if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)))
             for layer in padded.deconvs]
    assert padded.picture_pad == {1: 7, 2: 7, 3: 7} and [c.in_channels for c in convs[1:4]] == [104, 56, 32]
    z = torch.rand(3, cfg.latent_dim) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(padded(z), dec(z), atol=1e-6, rtol=0)
    assert dec.picture_pad == {} and all(torch.equal(v, before[k]) for k, v in dec.state_dict().items())
    assert padded.padded_for_inference().picture_pad == {1: 7, 2: 7, 3: 7}  # padding a padded copy adds nothing


def test_without_the_layout_the_latent_is_the_code_alone():
    cfg = ModelConfig.preset("lite", width=64, height=48, **{**TINY, "layout": False})
    assert cfg.latent_dim == cfg.z_dim and cfg.layout_cells == 0
    m = build(cfg).eval()
    with torch.no_grad():
        mu, _ = m.encoder(torch.zeros(1, 3, 48, 64))
        assert m.decoder(mu).shape == (1, 3, 48, 64)
    assert mu.shape == (1, cfg.z_dim)
    assert not ModelConfig.preset("broad2016").layout  # the film's model as it was


# ---- the spatial code: lite's latent, a mean and a sigma per cell and channel, nothing beside it ----------

def test_the_dream_code_is_a_map_of_8_channels_over_32x18_and_nothing_bypasses_it():
    cfg = ModelConfig.preset("dream")
    assert cfg.spatial and not cfg.layout and cfg.latent_grid == (18, 32)
    assert cfg.z_dim == cfg.latent_dim == 8 * 18 * 32
    assert cfg.plan.learned == cfg.latent_dim and cfg.plan.shape == (8, 18, 32) and cfg.plan.scale == 2.5
    torch.manual_seed(0)
    ae = AutoEncoder(cfg).eval()
    x = torch.rand(2, 3, 144, 256) * 2 - 1
    with torch.no_grad():
        mu, log_sigma = ae.encoder(x)
        assert mu.shape == log_sigma.shape == (2, cfg.latent_dim)
        assert float(mu.abs().max()) <= 1 and float(log_sigma.exp().min()) >= 0.6  # the film's bound
        # each cell answers for its own place: changing the code of one corner cell moves that corner most
        z = mu.clone()
        z[:, 0] += 3.0  # channel 0, row 0, col 0
        diff = (ae.decoder(z) - ae.decoder(mu)).abs().mean(dim=(0, 1))
        assert float(diff[:16, :16].mean()) > 5 * float(diff[-16:, -16:].mean())


def test_a_spatial_code_refuses_a_size_it_cannot_have_and_a_layout_beside_it():
    with pytest.raises(ValueError, match="spatial code"):
        ModelConfig.preset("dream", width=64, height=48, z_dim=16)
    with pytest.raises(ValueError, match="takes no layout"):
        ModelConfig.preset("dream", width=64, height=48, layout=True)
    with pytest.raises(ValueError, match="latent_scale"):
        ModelConfig.preset("dream", width=64, height=48, latent_scale=3)
