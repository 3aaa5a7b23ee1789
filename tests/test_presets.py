"""Presets: the shipped files, validation errors naming file and key, lookup, saving, MIDI-learn writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoencoded.documents import parse_toml
from autoencoded.errors import UserError
from autoencoded.live.control import presets as P
from autoencoded.live.control.params import SPECS, ParamStore

SHIPPED = ("default", "noise-sweep", "nanokontrol2", "touchosc")


@pytest.fixture(autouse=True)
def isolated_user_dir(tmp_path, monkeypatch):
    """Never read or write the real ~/.config."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("AUTOENCODED_PRESETS", raising=False)


def write(tmp_path: Path, text: str, name: str = "p.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_presets_load(name):
    preset = P.load_preset(name)
    assert preset.name == name and preset.description


def test_shipped_presets_are_the_repository_folder():
    shipped = {p.name for p in P.SHIPPED_DIR.glob("*.toml")}
    assert shipped >= {f"{n}.toml" for n in SHIPPED}
    assert P.SHIPPED_DIR.resolve() == (Path(__file__).resolve().parents[1] / "presets").resolve()


def test_default_preset_holds_every_default():
    preset = P.load_preset("default")
    assert preset.params == {name: spec.default for name, spec in SPECS.items()}


def test_shipped_maps():
    nano = P.load_preset("nanokontrol2")
    assert nano.midi_device == "nanoKONTROL2" and nano.midi_channel == 1
    assert nano.midi_cc[0] == "noise" and nano.midi_cc[32] == "cue/store/0" and nano.midi_cc[48] == "cue/recall/0"
    touch = P.load_preset("touchosc")
    assert touch.osc_aliases["/1/fader1"] == "noise" and touch.osc_aliases["/2/push9"] == "cue/store/0"
    assert touch.midi_cc is None and nano.osc_aliases is None  # absent sections keep the current maps
    sweep = P.load_preset("noise-sweep")
    assert sweep.params["noise"] > 0


def test_full_preset_parses(tmp_path):
    path = write(tmp_path, '''
description = "x"
[params]
noise = 0.5
noise_drift = 0.2
"cue/recall" = 3
freeze = true
[osc.aliases]
"/fader/a" = "smooth"
"/btn/1" = "cue/store/1"
[midi]
device = "auto"
channel = 16
[midi.cc]
7 = "mix"
64 = "freeze/toggle"
[live]
model = "models/a"
input = "demo"
output = ["window", "out.mp4"]
''')
    p = P.load_preset(str(path))
    assert p.name == "p" and p.path == path
    assert p.params == {"noise": 0.5, "noise/drift": 0.2, "cue/recall": 3, "freeze": 1}
    assert p.osc_aliases == {"/fader/a": "smooth", "/btn/1": "cue/store/1"}
    assert (p.midi_device, p.midi_channel, p.midi_cc) == ("auto", 16, {7: "mix", 64: "freeze/toggle"})
    assert p.live == {"model": "models/a", "input": "demo", "output": ["window", "out.mp4"]}


@pytest.mark.parametrize("text,key", [
    ('colour = 1', "colour"),
    ('[params]\nnoize = 0.5', "params.noize"),
    ('[params]\nnoise = "loud"', "params.noise"),
    ('[params]\nnoise = nan', "params.noise"),
    ('[params]\nnoise = inf', "params.noise"),
    ('[params]\nnoise = 1.5', "params.noise"),
    ('[params]\n"noise/seed" = 1.5', "params.noise/seed"),
    ('[params]\nmix = -0.1', "params.mix"),
    ('params = 3', "params"),
    ('[osc]\nport = 9000', "osc.port"),
    ('[osc.aliases]\n"fader1" = "noise"', "osc.aliases.'fader1'"),
    ('[osc.aliases]\n"/a b" = "noise"', "osc.aliases.'/a b'"),
    ('[osc.aliases]\n"/noise" = "mix"', "osc.aliases.'/noise'"),
    ('[osc.aliases]\n"/preset" = "mix"', "osc.aliases.'/preset'"),
    ('[osc.aliases]\n"/x" = "volume"', "osc.aliases.'/x'"),
    ('[midi]\nchannel = 0', "midi.channel"),
    ('[midi]\nchannel = 17', "midi.channel"),
    ('[midi]\ndevice = ""', "midi.device"),
    ('[midi]\nspeed = 1', "midi.speed"),
    ('[midi.cc]\n128 = "noise"', "midi.cc.128"),
    ('[midi.cc]\nabc = "noise"', "midi.cc.abc"),
    ('[midi.cc]\n1 = "cue/recall/16"', "midi.cc.1"),
    ('[midi.cc]\n1 = 5', "midi.cc.1"),
    ('[live]\nmodel = ""', "live.model"),
    ('[live]\noutput = []', "live.output"),
    ('[live]\nfps = 30', "live.fps"),
    ('description = 3', "description"),
])
def test_errors_name_the_file_and_the_key(tmp_path, text, key):
    path = write(tmp_path, text)
    with pytest.raises(UserError) as info:
        P.load_preset(str(path))
    msg = str(info.value)
    assert msg.startswith(f"{path}: {key}:"), msg
    assert "\n" not in msg


def test_invalid_toml_and_non_utf8_are_one_line(tmp_path):
    for data in (b"[params\nnoise = 1", b"\xff\xfe[params]"):
        path = tmp_path / "bad.toml"
        path.write_bytes(data)
        with pytest.raises(UserError) as info:
            P.load_preset(str(path))
        assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_lookup_by_name_and_path(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="no preset named 'nope'"):
        P.load_preset("nope")
    with pytest.raises(UserError, match="does not exist"):
        P.load_preset(str(tmp_path / "missing.toml"))
    # a user preset shadows a shipped one of the same name; AUTOENCODED_PRESETS comes first of all
    user = P.user_dir()
    user.mkdir(parents=True)
    (user / "default.toml").write_text('description = "mine"\n')
    assert P.load_preset("default").description == "mine"
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "default.toml").write_text('description = "env"\n')
    monkeypatch.setenv("AUTOENCODED_PRESETS", str(extra))
    assert P.load_preset("default.toml").description == "env"
    assert "default" in P.list_presets() and "touchosc" in P.list_presets()


@pytest.mark.parametrize("ref", ["../etc/passwd", "/etc/passwd", "a/b", "..", ".hidden", "x" * 80])
def test_names_from_the_network_never_become_paths(ref):
    with pytest.raises(UserError):
        P.load_preset(ref, allow_path=False)


def test_save_preset_round_trips(tmp_path):
    store = ParamStore(noise=0.7, noise_seed=42, smooth=0.3, freeze=1, memory=0.4)
    base = P.load_preset("touchosc")
    path = P.save_preset(tmp_path / "sub" / "mine.toml", store, base=base)
    assert path.is_file() and not list(path.parent.glob(".*tmp"))
    loaded = P.load_preset(str(path))
    assert loaded.params == store.peek().values()
    assert loaded.osc_aliases == base.osc_aliases and loaded.description == base.description
    saved = parse_toml(path.read_text())["params"]
    assert saved["noise/seed"] == 42 and saved["memory"] == 0.4


def test_save_preset_into_unwritable_place_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="cannot write preset"):
        P.save_preset(blocker / "p.toml", ParamStore())


def test_bind_cc_never_touches_shipped_files(tmp_path):
    shipped = P.load_preset("nanokontrol2")
    before = shipped.path.read_bytes()
    path = P.bind_cc(shipped, 20, "noise")
    assert path == P.user_dir() / "nanokontrol2.toml"
    assert shipped.path.read_bytes() != b"" and P.find_preset("nanokontrol2") == path
    assert (P.SHIPPED_DIR / "nanokontrol2.toml").read_bytes() == before
    again = P.load_preset("nanokontrol2")
    assert again.midi_cc[20] == "noise" and 0 not in again.midi_cc  # one CC per control: CC 0 moved to 20
    assert again.midi_cc[1] == "noise/drift"


def test_bind_cc_updates_a_user_file_in_place(tmp_path):
    path = write(tmp_path, '[params]\nnoise = 0.1\n')
    preset = P.load_preset(str(path))
    assert P.bind_cc(preset, 5, "cue/recall/2") == path
    again = P.load_preset(str(path))
    assert again.midi_cc == {5: "cue/recall/2"} and again.params == {"noise": pytest.approx(0.1)}
    with pytest.raises(UserError):
        P.bind_cc(preset, 200, "noise")
    with pytest.raises(UserError):
        P.bind_cc(preset, 1, "volume")
