"""Drills: a newcomer adds a loss term, or an architecture, in one place (a plugin module this test writes,
whose import registers it), and it works end to end: a `train` option, a real training run that logs it,
a real export that ONNX Runtime loads. The registries are restored afterwards."""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from autoencoded.training import archs, losses

from helpers import cli, make_dataset, metrics


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """plugin(name, source) -> the imported module written from `source`; its registrations go to copies of
    the registries, which the originals replace again when the test ends."""
    monkeypatch.setattr(losses, "TERMS", dict(losses.TERMS))
    monkeypatch.setattr(archs, "ARCHS", dict(archs.ARCHS))
    folder = tmp_path / "plugins"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    names = []

    def _load(name: str, source: str):
        (folder / f"{name}.py").write_text(textwrap.dedent(source))
        names.append(name)
        return importlib.import_module(name)

    _load.folder = folder  # where a test that loads a plugin another way writes it
    yield _load
    for name in names:
        sys.modules.pop(name, None)


LOSS_PLUGIN = """
    from autoencoded.training import losses

    TV_WEIGHT = losses.Knob("tv_weight", "Weight of the reconstruction's total variation")


    def total_variation(seen):
        r = seen.recon.float()
        return (r.diff(dim=-1).abs().mean() + r.diff(dim=-2).abs().mean()) / 2


    # one weight in both objectives: the pixel-led step keeps its single backward pass
    losses.register(losses.Term("tv", total_variation, {"encoder": TV_WEIGHT, "decoder": TV_WEIGHT}, losses.DEC))
"""


def test_a_new_loss_term_is_a_train_option_a_config_field_and_a_logged_term(plugin, tmp_path, capsys):
    plugin("drill_loss", LOSS_PLUGIN)
    assert cli("train", "--help") == 0
    assert "--tv-weight FLOAT" in capsys.readouterr().out.replace("\n", " ")
    assert cli("train", make_dataset(tmp_path / "x", n=8), "-o", tmp_path / "bad", "--tv-weight", "nan") == 2
    assert "--tv-weight nan: must be a finite number" in capsys.readouterr().err
    ds = make_dataset(tmp_path / "ds", n=8)
    run = tmp_path / "run"
    assert cli("train", ds, "-o", run, "--steps", 2, "--batch", 4, "--tv-weight", 0.25, "--no-progress") == 0
    assert json.loads((run / "config.json").read_text())["tv_weight"] == 0.25
    m = metrics(run)
    assert sorted(m) == [1, 2]
    for step in (1, 2):
        assert 0 < m[step]["tv"] < 2 and np.isfinite(m[step]["tv"])
        # in the reconstruction the encoder and the decoder are scored on, with its weight
        without = m[step]["rec"] - 0.25 * m[step]["tv"]
        assert without == pytest.approx(m[step]["pix"] + 0.5 * m[step]["structure"], rel=1e-5)
    # resumed, the run keeps the weight it was given
    assert cli("train", ds, "-o", run, "--resume", "--steps", 3, "--no-progress") == 0
    assert json.loads((run / "config.json").read_text())["tv_weight"] == 0.25 and max(metrics(run)) == 3


def test_a_knob_that_names_a_run_setting_or_another_terms_knob_is_refused_at_registration():
    """A knob called `lr` would have taken the learning rate's config key and option without a word."""
    term = losses.Term("shadow", lambda seen: seen.recon.mean(), {"decoder": losses.Knob("lr", "shadows lr")},
                       losses.DEC)
    with pytest.raises(ValueError, match="knob 'lr' is a training setting"):
        losses.register(term)
    clash = losses.Term("clash", lambda seen: seen.recon.mean(), {"decoder": losses.Knob("gamma", "another's")},
                        losses.DEC)
    with pytest.raises(ValueError, match="knob 'gamma' is another term's"):
        losses.register(clash)
    assert "shadow" not in losses.TERMS and "clash" not in losses.TERMS


ARCH_PLUGIN = """
    import torch

    from autoencoded.training import archs
    from autoencoded.training.model import Decoder, Discriminator, Encoder


    class SoftEncoder(Encoder):
        \"\"\"The family's encoder with a softer bound on its mean.\"\"\"

        def bound(self, mu, log_sigma):
            return torch.tanh(mu / 2), 0.5 * torch.tanh(log_sigma)


    class SoftDecoder(Decoder):
        pass


    class SoftDiscriminator(Discriminator):
        pass


    # what it changes from lite: three stages (frames divide by 8, not by the film's 16) of tiny widths, a
    # vector code of 16 beside the layout, a small batch and the discriminator halfway; the rest is lite's
    archs.register(archs.Arch(
        "soft3", "a three-stage tiny variant with a softer bound",
        model=dict(z_dim=16, latent_channels=0, layout=True, enc_channels=(8, 16, 16), dec_channels=(16, 16, 8),
                   bottleneck_channels=8, disc_channels=(8, 16, 16), sim_layers=(0, 1, 2)),
        train=dict(batch=4, adversarial_start=0.5),
        networks={role: f"drill_arch.Soft{role.capitalize()}" for role in ("encoder", "decoder", "discriminator")},
    ))
"""


def test_a_new_architecture_trains_two_steps_and_exports_a_pack_onnx_runtime_decodes(plugin, tmp_path, capsys):
    from autoencoded.live.engines.ort_backend import OnnxRuntimeEngine
    from autoencoded.live.engines.pack import read_pack
    from autoencoded.training.weights import load_weights, resolve_checkpoint

    mod = plugin("drill_arch", ARCH_PLUGIN)
    w, h = 40, 24  # divides by 8, not by 16: the entry's stage count decides
    ds = make_dataset(tmp_path / "ds", n=8, width=w, height=h)
    assert cli("train", ds, "-o", tmp_path / "lite", "--steps", 1) == 2
    assert "both sides must divide by 16" in capsys.readouterr().err
    run = tmp_path / "run"
    assert cli("train", ds, "-o", run, "--arch", "soft3", "--steps", 2, "--checkpoint-every", 2,
               "--no-progress") == 0
    m = metrics(run)
    assert [m[s]["adversarial"] for s in (1, 2)] == [0.0, 1.0] and np.isfinite(m[2]["dis"])
    cfg, state, _ = load_weights(resolve_checkpoint(run, "latest"))
    assert cfg.arch == "soft3" and cfg.stages == 3 and cfg.latent_dim == 16 + (h // 8) * (w // 8)
    from autoencoded.training.model import build

    net = build(cfg)
    assert isinstance(net.encoder, mod.SoftEncoder) and isinstance(net.discriminator, mod.SoftDiscriminator)
    pack = tmp_path / "pack"
    assert cli("export", run, "-o", pack) == 0
    capsys.readouterr()
    meta = json.loads((pack / "model.json").read_text())
    assert (meta["arch"], meta["width"], meta["height"], meta["z_dim"]) == ("soft3", w, h, cfg.latent_dim)
    frames = np.load(Path(ds) / "frames.npy")[:3]
    with OnnxRuntimeEngine(read_pack(pack), device="cpu") as engine:
        mu, _ = engine.encode(frames)
        out = engine.decode(mu)  # the batch axis stays dynamic in the new family's pack too
    assert mu.shape == (3, cfg.latent_dim) and np.abs(mu[:, :16]).max() <= 1
    assert out.shape == (3, h, w, 3) and out.dtype == np.uint8 and out.std() > 0


BROKEN_ARCH_PLUGIN = """
    from autoencoded.training import archs
    from autoencoded.training.model import Decoder


    class ShyDecoder(Decoder):
        def __init__(self, cfg):
            raise ValueError("no decoder today")


    class NotANetwork:
        def __init__(self, cfg):
            pass


    for name, role, cls in (("shy", "decoder", "ShyDecoder"), ("plain", "discriminator", "NotANetwork")):
        archs.register(archs.Arch(name, "a family whose " + role + " is broken",
                                  networks={**archs.FAMILY, role: "broken_arch." + cls}))
"""


def test_a_plugin_network_that_fails_to_build_or_is_no_network_is_one_line_naming_the_plugin(
        plugin, tmp_path, monkeypatch, capsys):
    """The plugin's own fault is its line and exit 2, not an internal error of `train`."""
    from autoencoded import plugins

    (plugin.folder / "broken_arch.py").write_text(textwrap.dedent(BROKEN_ARCH_PLUGIN))  # loaded as users name it
    monkeypatch.setenv(plugins.ENV_VAR, "broken_arch")
    monkeypatch.setattr(plugins, "_loaded", set())
    monkeypatch.delitem(sys.modules, "broken_arch", raising=False)
    plugins.load_plugins()
    ds = make_dataset(tmp_path / "ds", n=4)
    where = "error: plugin AUTOENCODED_PLUGINS module broken_arch: architecture"
    for arch, why in (("shy", "shy: decoder broken_arch.ShyDecoder failed (ValueError: no decoder today)"),
                      ("plain", "plain: discriminator broken_arch.NotANetwork returned NotANetwork, not an "
                                "instance of torch.nn.modules.module.Module")):
        assert cli("train", ds, "-o", tmp_path / arch, "--arch", arch, "--steps", 1, "--batch", 2,
                   "--no-progress") == 2
        assert capsys.readouterr().err.strip().splitlines()[-1] == f"{where} {why}"
        assert not (tmp_path / arch / "checkpoints").exists()
    sys.modules.pop("broken_arch", None)
