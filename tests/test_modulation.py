"""The modulation matrix: routes from the command line and presets, envelopes, clamping, and the live
Modulator fed by real sources."""

from __future__ import annotations

import math

import pytest

from autoencoded.errors import UserError
from autoencoded.live.control.modulation import ModMatrix, ModRoute, Modulator, make_route, parse_mod
from autoencoded.live.control.params import Params, ParamStore
from autoencoded.live.control.presets import load_preset, parse_preset, preset_to_toml, save_preset


def test_parse_mod():
    assert parse_mod("audio.bass:noise:0.8") == ModRoute("audio.bass", "noise", 0.8, 0.005, 0.15)
    assert parse_mod(" audio.onset : /noise/drift : -1 : 0 : 0.3 ") == ModRoute("audio.onset", "noise/drift", -1.0,
                                                                                0.0, 0.3)
    for bad, why in [("audio.bass:noise", "expected SIGNAL:CONTROL:AMOUNT"), ("audio.treble:noise:1", "unknown signal"),
                     ("audio.bass:freeze:1", "cannot modulate 'freeze'"), ("audio.bass:noise/seed:1", "cannot modulate"),
                     ("audio.bass:noise:2", "amount must be a number in -1..1"),
                     ("audio.bass:noise:x", "amount must be a number"), ("audio.bass:noise:nan", "amount"),
                     ("audio.bass:noise:1:-1", "attack must be"), ("audio.bass:noise:1:0:99", "release must be")]:
        with pytest.raises(ValueError, match=why):
            parse_mod(bad)


def test_envelope_attack_and_release():
    m = ModMatrix([ModRoute("audio.bass", "noise", 1.0, attack=0.1, release=0.5)])
    dt = 0.01
    # a step up reaches 1 - 1/e after one attack time, a step down falls to 1/e after one release time
    for _ in range(10):
        up = m.offsets({"audio.bass": 1.0}, dt)["noise"]
    assert up == pytest.approx(1 - math.exp(-1), abs=1e-6)
    for _ in range(300):
        m.offsets({"audio.bass": 1.0}, dt)
    for _ in range(50):
        down = m.offsets({"audio.bass": 0.0}, dt)["noise"]
    assert down == pytest.approx(math.exp(-1), abs=1e-3)
    instant = ModMatrix([ModRoute("audio.onset", "noise", 1.0, attack=0.0, release=0.0)])
    assert instant.offsets({"audio.onset": 0.7}, 0.0)["noise"] == pytest.approx(0.7)
    assert instant.offsets({"audio.onset": 0.0}, 0.01)["noise"] == 0.0


def test_apply_adds_on_top_of_the_base_clamped_to_the_range():
    m = ModMatrix([ModRoute("audio.bass", "noise/max", 0.5, 0, 0), ModRoute("audio.high", "noise/max", 0.25, 0, 0),
                   ModRoute("audio.level", "mix", -1.0, 0, 0)])
    base = Params(noise_max=1.0, mix=0.6, version=7)
    p = m.apply(base, {"audio.bass": 1.0, "audio.high": 0.4}, 0.03)
    assert p.noise_max == pytest.approx(1.0 + (0.5 + 0.25 * 0.4) * 4.0)  # noise/max spans 0..4
    assert p.mix == 0.6 and p.version == 7  # a missing signal counts as 0; the store's version is kept
    p = m.apply(base, {"audio.bass": 1.0, "audio.high": 1.0, "audio.level": 1.0}, 0.03)
    assert p.noise_max == 4.0 and p.mix == 0.0
    assert m.apply(base, {"audio.bass": float("nan"), "audio.level": 7.0}, 0.03).mix == 0.0  # garbage is clamped
    assert ModMatrix().apply(base, {"audio.bass": 1.0}, 0.03) is base


def test_modulator_reads_its_sources_each_frame_and_never_fails_a_frame():
    class Source:  # anything with a `values` dict is a signal source (AudioInput, a beat clock)
        values = {"audio.onset": 1.0}

    t = [0.0]
    mod = Modulator(ModMatrix([parse_mod("audio.onset:noise:1:0:0.1")]), [Source()], clock=lambda: t[0])
    store = ParamStore(noise=0.1)
    assert mod(store.snapshot()).noise == 1.0  # 0.1 + 1 x the range, clamped
    Source.values = {"audio.onset": 0.0}
    t[0] = 0.1
    assert mod(store.snapshot()).noise == pytest.approx(0.1 + math.exp(-1))
    assert store.peek().noise == pytest.approx(0.1)  # the store keeps the base value
    assert mod.values == {"audio.onset": 0.0}

    class Broken:
        @property
        def values(self):
            raise RuntimeError("driver gone")

    mod.sources.append(Broken())
    base = store.snapshot()
    assert mod(base) is base and mod.errors == 1


def test_routes_survive_a_change_of_routes():
    r = parse_mod("audio.bass:noise:1:1:1")
    m = ModMatrix([r])
    m.offsets({"audio.bass": 1.0}, 0.5)
    before = m.offsets({"audio.bass": 1.0}, 0.0)["noise"]
    m.set_routes([r, parse_mod("audio.high:mix:-0.5")])
    assert m.offsets({"audio.bass": 1.0}, 0.0)["noise"] == pytest.approx(before)
    assert m.signals == {"audio.bass", "audio.high"}


def test_presets_hold_mod_tables(tmp_path):
    path = tmp_path / "bass.toml"
    path.write_text('[[mod]]\nsignal = "audio.bass"\ntarget = "noise"\namount = 0.8\n\n'
                    '[[mod]]\nsignal = "beat.pulse"\ntarget = "cue/mix"\namount = -0.5\nattack = 0\nrelease = 0.25\n')
    p = load_preset(str(path))
    assert p.mods == [make_route("audio.bass", "noise", 0.8), make_route("beat.pulse", "cue/mix", -0.5, 0, 0.25)]
    assert load_preset("default").mods is None
    saved = save_preset(tmp_path / "copy.toml", ParamStore(), base=p)
    assert load_preset(str(saved)).mods == p.mods
    assert parse_preset(preset_to_toml(p), "again").mods == p.mods
    for text, key in [('[[mod]]\nsignal = "audio.bass"\ntarget = "noise"\n', "mod[0]: missing amount"),
                      ('[[mod]]\nsignal = "audio.bass"\ntarget = "noise"\namount = 1\nshape = "exp"\n',
                       "mod[0].shape: unknown key"),
                      ('[[mod]]\nsignal = "audio.bass"\ntarget = "freeze"\namount = 1\n', "mod[0]: cannot modulate"),
                      ('[[mod]]\nsignal = "audio.bass"\ntarget = "noise"\namount = "1"\n', "mod[0]: amount must be"),
                      ('mod = 3\n', "mod: expected [[mod]] tables")]:
        path.write_text(text)
        with pytest.raises(UserError, match=key.replace("[", r"\[").replace("]", r"\]")):
            load_preset(str(path))
