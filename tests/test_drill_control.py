"""Drill: a newcomer adds a control as a plugin does, one `register_control` call (live/control/params.py),
and it is there end to end: a field of every frame's Params, an option of `live` and `render` (the real
command line), an OSC address (a real UDP datagram to a real server sets it), the web API (real HTTP to the
real app lists it and sets it), the web page (a real Chromium draws it, and a keyboard and a click play it),
presets (saved, loaded and applied back), a MIDI map and a modulation target; with its effect (one entry in
EFFECTS, live/control/latent.py) it changes the frame a real engine makes, live and in a render. Nothing
else is edited."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from autoencoded.live.control import latent
from autoencoded.live.control.midi import MidiMapper
from autoencoded.live.control.modulation import ModMatrix, make_route
from autoencoded.live.control.osc import OscServer
from autoencoded.live.control.params import CONTROLS, ParamStore, Spec, register_control
from autoencoded.live.control.presets import load_preset, save_preset
from autoencoded.live.control.surface import ControlSurface
from autoencoded.live.web.app import Remote
from autoencoded.live.web.server import WebServer

from helpers import cc, cli, msg, read_video, sender, settle, tiny_checkpoint, wait_for

# the newcomer's change: a fader and a toggle, registered as a plugin registers them
NEW_CONTROLS = {
    "grain": Spec(float, 0.0, 2.0, 0.5, "grain stirred into the latent"),
    "grain/mono": Spec(int, 0, 1, 0, "the same grain for every frame"),
}
# and the fader's effect, as its line in EFFECTS would be: the noise pattern, added to the latent
GRAIN = latent.Effect("grain", lambda p: p.grain > 0, lambda fx, z, frame_in, p: z + np.float32(p.grain) * frame_in[2])


@pytest.fixture(autouse=True)
def new_controls(tmp_path, monkeypatch):
    """The controls registered for one test and its effect added; taken out after (the table is the process's)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("AUTOENCODED_PRESETS", raising=False)
    monkeypatch.delenv("AUTOENCODED_WEB_TOKEN", raising=False)
    monkeypatch.setattr(latent, "EFFECTS", (*latent.EFFECTS, GRAIN))
    try:
        for name, spec in NEW_CONTROLS.items():
            register_control(name, spec)
        yield
    finally:
        for name in NEW_CONTROLS:
            CONTROLS.pop(name, None)


def test_params_hold_the_new_controls_at_their_defaults():
    p = ParamStore().snapshot()
    assert p.grain == 0.5 and p.grain_mono is False  # a toggle holds a bool, as freeze does
    assert p.values()["grain"] == 0.5 and p.values()["grain/mono"] == 0
    assert ParamStore(grain=1.5, grain_mono=1).snapshot().values() == {**p.values(), "grain": 1.5, "grain/mono": 1}


def test_osc_sets_the_new_controls():
    store = ParamStore()
    server = OscServer(store, "127.0.0.1", 0).start()
    try:
        s = sender()
        start = server.counters["received"]
        for datagram in (msg("/grain", 9.0), msg("/grain/mono", True)):
            s.sendto(datagram, ("127.0.0.1", server.port))
        s.close()
        settle(server, start + 2)
    finally:
        server.stop()
    p = store.snapshot()
    assert p.grain == 2.0 and p.grain_mono is True  # clamped to its range like every control
    assert server.counters["applied"] == 2 and server.counters["unknown_address"] == 0


def test_the_web_api_lists_and_sets_the_new_controls():
    store = ParamStore()
    with WebServer(Remote(store), "127.0.0.1", 0, log=lambda line: None) as server, \
            httpx.Client(trust_env=False, timeout=30) as http:
        base = f"http://127.0.0.1:{server.port}/api/v1/params"
        listed = http.get(base).json()["controls"]
        assert listed["grain"] == {"type": "float", "value": 0.5, "min": 0.0, "max": 2.0, "default": 0.5,
                                   "help": "grain stirred into the latent"}
        assert listed["grain/mono"]["type"] == "toggle"
        r = http.post(base, json={"grain": 0.75, "grain/mono": True})
        assert r.status_code == 200, r.text
        refused = http.post(base, json={"grain": "lots"})
        assert refused.status_code == 422 and "grain" in refused.json()["error"]
    assert store.snapshot().values()["grain"] == 0.75 and store.snapshot().grain_mono is True


def test_a_preset_round_trips_the_new_controls(tmp_path):
    played = ParamStore(grain=1.75, grain_mono=1)
    path = save_preset(tmp_path / "grainy.toml", played)
    assert load_preset(str(path)).params["grain"] == 1.75
    fresh = ParamStore()
    surface = ControlSurface(fresh, preset=str(path), osc_port=None, log=lambda line: None).start()
    surface.stop()
    assert fresh.snapshot().values() == played.snapshot().values()


def test_midi_and_modulation_reach_the_new_control():
    store = ParamStore()
    MidiMapper(store, {14: "grain"}).handle(cc(14, 127))
    assert store.snapshot().grain == 2.0
    matrix = ModMatrix([make_route("audio.bass", "grain", -0.5, 0.0, 0.0)])
    assert matrix.apply(store.snapshot(), {"audio.bass": 1.0}, dt=0.01).grain == pytest.approx(1.0)


def test_the_web_page_draws_the_new_controls_and_a_hand_plays_them():
    """The page builds its widgets from the API's listing: in a real Chromium (Debian's, as
    tests/test_web_browser.py drives it) the new fader is a slider the keyboard moves and the toggle a button."""
    import os
    from pathlib import Path

    playwright_api = pytest.importorskip("playwright.sync_api")
    chromium = Path("/usr/bin/chromium")
    if not chromium.is_file():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    store = ParamStore()
    with WebServer(Remote(store), "127.0.0.1", 0, log=lambda line: None) as server, \
            playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium),
                                    args=["--no-sandbox"] if os.geteuid() == 0 else [])
        try:
            page = browser.new_page()
            page.goto(server.url)
            fader = page.locator('input[type=range][data-name="grain"]')
            fader.wait_for()
            assert (fader.get_attribute("min"), fader.get_attribute("max")) == ("0", "2")
            assert float(fader.input_value()) == 0.5
            fader.focus()
            page.keyboard.press("End")  # the fader's top, as a hand on a keyboard would take it
            wait_for(lambda: store.peek().grain == 2.0, "the fader's value in the store")
            page.locator('button[data-name="grain/mono"]').click()
            wait_for(lambda: store.peek().grain_mono is True, "the toggle in the store")
            wait_for(lambda: page.locator('button[data-name="grain/mono"].on').count() == 1, "the lit toggle")
        finally:
            browser.close()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A real (tiny, untrained) model whose decoder answers its latent (helpers.tiny_checkpoint)."""
    return tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.safetensors", he_init=True)


def test_the_new_control_changes_the_frame_a_real_engine_makes(model, make_video):
    from autoencoded.live.engines import open_engine
    from autoencoded.live.io.sinks import NullSink
    from autoencoded.live.io.sources import VideoFileSource
    from autoencoded.live.loop.pipeline import Pipeline

    clip = make_video(n_frames=2, width=64, height=48)
    store = ParamStore(grain=0)
    pipeline = Pipeline(VideoFileSource(clip), open_engine(str(model), backend="torch", log=lambda m: None),
                        [NullSink()], params=store, size=(64, 48), log=lambda m: None)
    frame = read_video(clip)[0]
    try:
        plain = pipeline.process(frame)
        store.set("grain", 2.0)
        grainy = pipeline.process(frame)
    finally:
        pipeline.stop()
    assert np.abs(grainy.astype(np.int16) - plain).mean() > 1.0


def test_the_commands_take_the_new_controls_as_options(model, make_video, tmp_path, capsys):
    for command in ("live", "render"):
        assert cli(command, "--help") == 0
        text = " ".join(capsys.readouterr().out.split())  # as read, not as wrapped
        assert "--grain FLOAT Grain stirred into the latent. [default: 0.5; 0.0<=x<=2.0]" in text, command
        assert "--grain-mono INTEGER RANGE The same grain for every frame. [default: 0; 0<=x<=1]" in text
    assert cli("live", "--grain", "9") == 2
    assert capsys.readouterr().err.strip() == "error: --grain 9: must be between 0 and 2"
    clip = make_video(n_frames=3, width=64, height=48)
    for grain in ("0", "2"):
        assert cli("render", clip, tmp_path / f"grain{grain}.mkv", "--model", model, "--backend", "torch",
                   "--grain", grain) == 0
    plain, grainy = (np.stack(read_video(tmp_path / f"grain{g}.mkv")).astype(np.int16) for g in ("0", "2"))
    assert plain.shape == grainy.shape and np.abs(grainy - plain).mean() > 1.0


def test_a_control_named_like_a_command_option_is_one_line_from_that_command(capsys):
    register_control("fps", Spec(float, 1.0, 60.0, 30.0, "a plugin's frame rate"))
    try:
        assert cli("live", "--help") == 2
        assert capsys.readouterr().err.strip() == ("error: control fps: --fps is an option of `live` already; "
                                                   "register the control under another name")
        assert cli("render", "--help") == 0  # render has no --fps: there it is the plugin's option
    finally:
        del CONTROLS["fps"]
