"""ControlSurface: OSC + MIDI + presets as one object, and the done-when check: a live loop on a file,
played by a real OSC client, changes its output visibly."""

from __future__ import annotations

import contextlib
import shutil
import subprocess

import mido
import numpy as np
import pytest
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_packet import OscPacket

from autoencoded.cli import main
from autoencoded.errors import UserError
from autoencoded.live.control.params import ParamStore
from autoencoded.live.control.presets import load_preset, user_dir
from autoencoded.live.control.surface import ControlSurface

from helpers import (
    FakeDevices,
    cc,
    has_midi_subsystem,
    msg,
    sender,
    settle,
    synthetic_frame,
    tiny_checkpoint,
    wait_for,
)


@pytest.fixture(autouse=True)
def isolated_user_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("AUTOENCODED_PRESETS", raising=False)


def send(surface, *datagrams):
    s = sender()
    start = surface.osc.counters["received"]
    for d in datagrams:
        s.sendto(d, ("127.0.0.1", surface.osc.port))
    s.close()
    settle(surface.osc, start + len(datagrams))


def test_preset_at_start_and_switching_over_osc():
    store = ParamStore()
    seen, lines = [], []
    with ControlSurface(store, preset="touchosc", osc_port=0, on_preset=seen.append, log=lines.append) as cs:
        assert [p.name for p in seen] == ["touchosc"]
        send(cs, msg("/1/fader1", 0.35))
        assert store.peek().noise == pytest.approx(0.35)
        send(cs, msg("/preset", "noise-sweep"))
        sweep = load_preset("noise-sweep")
        values = store.peek().values()
        assert all(values[k] == pytest.approx(v) for k, v in sweep.params.items())
        assert cs.preset.name == "noise-sweep" and seen[-1].name == "noise-sweep"
        # noise-sweep has no [osc] section: the TouchOSC aliases stay
        send(cs, msg("/1/fader1", 0.1))
        assert store.peek().noise == pytest.approx(0.1)
        # names only from the network; a bad one changes nothing
        before = store.peek()
        send(cs, msg("/preset", "/etc/passwd"), msg("/preset", "../presets/default"), msg("/preset", "nope"))
        assert store.peek() == before and cs.osc.counters["callback_errors"] == 3
        send(cs, msg("/preset", "default"))
        assert store.peek().noise == 0.0 and store.peek().smooth == 0.0
    assert any(line.startswith("osc: listening on 127.0.0.1:") for line in lines)
    assert cs.osc is None


def test_a_preset_confirms_that_it_was_applied(capsys, monkeypatch, tmp_path):
    """Issue 23 item 25: `--preset` never said that it was applied. One line when it is, from every way in
    (the command line, OSC, the web remote): what it set, and nothing for a preset that was refused."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    store, lines = ParamStore(), []
    with ControlSurface(store, preset="touchosc", osc_port=0, log=lines.append) as cs:
        send(cs, msg("/preset", "noise-sweep"), msg("/preset", "nope"))
    said = [line for line in lines if line.startswith("preset")]
    assert said == [f"preset: touchosc applied ({len(load_preset('touchosc').params)} controls, OSC aliases)",
                    "preset: noise-sweep applied (9 controls)"], lines
    assert main(["live", "--preset", "noise-sweep", "--input", "demo", "--output", "null", "--duration", "0.5",
                 "--osc-port", "0", "--web", "0"]) == 0
    assert "preset: noise-sweep applied (9 controls)\n" in capsys.readouterr().err


def test_preset_model_and_osc_model_call_on_model(tmp_path):
    path = tmp_path / "show.toml"
    path.write_text('[params]\nnoise = 0.4\n[live]\nmodel = "models/dream"\n')
    models = []
    store = ParamStore()
    with ControlSurface(store, preset=str(path), osc_port=0, on_model=models.append, log=lambda s: None) as cs:
        # at start the live command opens the preset's model itself: no second request
        assert models == [] and store.peek().noise == pytest.approx(0.4)
        send(cs, msg("/model", "models/other"))
        cs.switch_preset(str(path))
        assert models == ["models/other", "models/dream"]


def test_bad_preset_at_start_is_a_user_error(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[params]\nnoize = 1\n")
    with pytest.raises(UserError, match="params.noize"):
        ControlSurface(ParamStore(), preset=str(path), osc_port=None).start()


def test_osc_off_and_lan_warning():
    lines = []
    with ControlSurface(ParamStore(), osc_port=None, log=lines.append) as cs:
        assert cs.osc is None and cs.stats()["preset"] is None
    with ControlSurface(ParamStore(), osc_host="0.0.0.0", osc_port=0, log=lines.append) as cs:
        assert cs.osc._allow is None
    assert any("ANY sender" in line for line in lines)
    with ControlSurface(ParamStore(), osc_host="0.0.0.0", osc_port=0, osc_allow=["192.168.1.0/24"],
                        log=lines.append) as cs:
        assert cs.osc._allow is not None


def test_status_through_the_surface():
    store = ParamStore()
    with ControlSurface(store, osc_port=0, status=lambda: {"fps": 29.5}, log=lambda s: None) as cs:
        client = sender()
        client.settimeout(10)
        client.sendto(msg("/status"), ("127.0.0.1", cs.osc.port))
        data, _ = client.recvfrom(65536)
        assert b"/status/fps" in data
        client.close()
        wait_for(lambda: cs.stats()["osc"]["status_replies"] == 1, "the reply to be counted")


def test_save_current_state_as_a_preset(tmp_path):
    store = ParamStore()
    with ControlSurface(store, preset="nanokontrol2", osc_port=0, midi_backend=FakeDevices([]),
                        log=lambda s: None) as cs:
        send(cs, msg("/noise", 0.55), msg("/smooth", 0.2))
        path = cs.save_preset(tmp_path / "mine.toml", description="saved on stage")
    p = load_preset(str(path))
    assert p.params["noise"] == pytest.approx(0.55) and p.params["smooth"] == pytest.approx(0.2)
    assert p.midi_cc == load_preset("nanokontrol2").midi_cc and p.description == "saved on stage"


def test_midi_through_the_surface_and_midi_learn():
    devices = FakeDevices(["nanoKONTROL2 MIDI 1"])
    store = ParamStore()
    lines = []
    with ControlSurface(store, preset="nanokontrol2", osc_port=None, midi_learn="smooth",
                        midi_backend=devices, log=lines.append) as cs:
        wait_for(lambda: devices.ports, "the MIDI port to open")
        port = devices.ports[-1]
        port.callback(mido.Message("note_on", note=3))  # not a control change: still learning
        port.callback(cc(21, 5))  # learned: CC 21 -> smooth, saved to the user's copy of the preset
        saved = user_dir() / "nanokontrol2.toml"
        assert saved.is_file() and load_preset("nanokontrol2").midi_cc[21] == "smooth"
        port.callback(cc(21, 127))
        assert store.peek().smooth == 1.0
        port.callback(cc(0, 127))  # the rest of the map still plays
        assert store.peek().noise == 1.0
        assert cs.stats()["midi"]["state"] == "open"
    assert any("midi-learn: CC 21 -> smooth, saved to" in line for line in lines)
    with pytest.raises(UserError, match="--midi-learn"):
        ControlSurface(ParamStore(), midi_learn="volume")


def test_no_midi_subsystem_keeps_the_surface_running(capfd):
    if has_midi_subsystem():
        pytest.skip("this machine has a MIDI subsystem")
    lines = []
    store = ParamStore()
    with ControlSurface(store, osc_port=0, midi="auto", log=lines.append) as cs:
        wait_for(lambda: cs.midi.state == "unavailable", "the MIDI thread to give up")
        send(cs, msg("/noise", 0.5))
        assert store.peek().noise == 0.5
    assert sum(line.startswith("midi:") for line in lines) == 1
    assert "ALSA" not in capfd.readouterr().err


# ------------------------------------------------------------------------------ done when
def _frames_after(pipe, sink, n: int) -> list[np.ndarray]:
    """n distinct output frames, all computed after this call (copies).

    Counted on the engine's processed frames, not on sink writes alone: a slow engine makes the sink
    repeat its last frame, which may predate the change."""
    def processed() -> int:
        return pipe.stats()["frames_processed"]

    p0 = processed()
    wait_for(lambda: processed() >= p0 + 3, "frames computed with the new values")
    out = []
    while len(out) < n:
        p, s = processed(), sink.frames
        wait_for(lambda p=p, s=s: processed() > p and sink.frames >= s + 2, "the next frame")
        out.append(sink.last.astype(np.int16))
    return out


@contextlib.contextmanager
def played_show(tmp_path, video):
    """A live loop on `video` through a tiny model into a NullSink, played by a ControlSurface on a free OSC
    port: yields (store, sink, pipeline, surface)."""
    from autoencoded.live.engines.torch_backend import TorchEngine
    from autoencoded.live.io.sinks import NullSink
    from autoencoded.live.io.sources import VideoFileSource
    from autoencoded.live.loop.pipeline import Pipeline

    ckpt = tiny_checkpoint(tmp_path / "tiny.safetensors", he_init=True)
    store = ParamStore()
    sink = NullSink()
    pipe = Pipeline(VideoFileSource(video), TorchEngine(ckpt, device="cpu"), [sink], params=store, fps=25.0,
                    size=(64, 48), log=lambda s: None)
    with ControlSurface(store, osc_port=0, on_model=pipe.request_model, status=pipe.stats,
                        log=lambda s: None) as cs, pipe:
        yield store, sink, pipe, cs


@pytest.mark.skipif(shutil.which("oscsend") is None, reason="oscsend (liblo-tools) is not installed")
def test_done_when_osc_from_a_real_client_changes_the_live_output(tmp_path, make_video):
    # a still scene, so any change in the output comes from the controls, not the footage
    # (MJPG: intra-only, so every decoded frame of the still scene is bit-identical)
    video = make_video("still.avi", n_frames=12, width=64, height=48, fps=25.0, fourcc="MJPG",
                       frame_fn=lambda i, w, h: synthetic_frame(0, w, h))
    with played_show(tmp_path, video) as (store, sink, pipe, cs):
        port, osc = str(cs.osc.port), cs.osc

        def oscsend(*args):
            base = cs.osc.counters["received"]
            subprocess.run(["oscsend", "localhost", port, *args], check=True, timeout=30)
            settle(cs.osc, base + 1)

        oscsend("/noise", "f", "0.0")
        calm = _frames_after(pipe, sink, 4)
        oscsend("/noise", "f", "1.0")
        oscsend("/noise/drift", "f", "1.0")
        dream = _frames_after(pipe, sink, 4)
        oscsend("/noise", "f", "0.0")
        calm_again = _frames_after(pipe, sink, 2)
    assert store.peek().noise == 0.0

    def mad(a, b):
        return float(np.abs(a - b).mean())

    calm_spread = max(mad(a, b) for a in calm for b in calm)
    dream_vs_calm = min(mad(d, c) for d in dream for c in calm)
    dream_spread = min(mad(a, b) for i, a in enumerate(dream) for b in dream[i + 1:])
    assert calm_spread == 0.0, calm_spread  # noise 0: the mean, the same frame every time
    assert dream_vs_calm > 5.0, dream_vs_calm  # 2% of full scale on every pixel on average: plainly visible
    assert dream_spread > 5.0, dream_spread  # drift 1: a new dream every frame
    assert mad(calm_again[-1], calm[0]) == 0.0
    print(f"noise 0 spread {calm_spread:.3f}, noise 1 vs 0 {dream_vs_calm:.1f}, drift 1 spread {dream_spread:.1f}"
          " (mean abs difference, 0..255)")
    assert osc.counters["applied"] == 4


def test_osc_status_carries_pipeline_stats(tmp_path, make_video):
    video = make_video("clip.mp4", n_frames=6, width=64, height=48)
    with played_show(tmp_path, video) as (store, sink, pipe, cs):
        wait_for(lambda: sink.frames >= 3, "a few frames")
        client = sender()
        client.settimeout(10)
        client.sendto(OscMessageBuilder("/status").build().dgram, ("127.0.0.1", cs.osc.port))
        data, _ = client.recvfrom(65536)
        client.close()
        # a model that cannot load keeps the current one playing and says why
        send(cs, msg("/model", str(tmp_path / "missing-model")))
        wait_for(lambda: pipe.model_error != "", "the failed load to be reported")
        frames = sink.frames
        wait_for(lambda: sink.frames > frames + 2, "frames after the failed swap")
    got = {m.message.address: m.message.params for m in OscPacket(data).messages}
    assert got["/status/model"] == [pipe.engine.name] and got["/noise"] == [0.0]
    assert got["/status/frames_out"][0] >= 3
    assert "missing-model" in pipe.model_error


def test_busy_default_port_is_one_line_explicit_port_is_an_error():
    lines = []
    with ControlSurface(ParamStore(), osc_port=0, log=lambda s: None) as first:
        busy = first.osc.port
        with ControlSurface(ParamStore(), osc_port=busy, osc_required=False, log=lines.append) as second:
            assert second.osc is None
        with pytest.raises(UserError, match="in use"):
            ControlSurface(ParamStore(), osc_port=busy).start()
    assert lines == [f"osc: off (OSC 127.0.0.1:{busy} is in use (another autoencoded live? pick one with --osc-port))"]


def _free_port() -> int:
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_live_command_with_preset_and_osc(tmp_path, make_video, capfd):
    from autoencoded.cli import main

    ckpt = tiny_checkpoint(tmp_path / "tiny.safetensors", he_init=True)
    video = make_video("clip.mp4", n_frames=6, width=64, height=48)
    port = _free_port()
    rc = main(["live", "--model", str(ckpt), "--input", str(video), "--output", "null", "--size", "64x48",
               "--max-frames", "10", "--preset", "touchosc", "--osc-port", str(port), "--noise", "0.3"])
    err = capfd.readouterr().err
    assert rc == 0, err
    assert f"osc: listening on 127.0.0.1:{port}" in err
    for args, needle in ((["--preset", "nope"], "no preset named 'nope'"),
                         (["--midi-learn", "volume"], "--midi-learn"),
                         (["--osc-feedback", "nowhere"], "--osc-feedback expects HOST:PORT"),
                         (["--osc-allow", "stage-laptop", "--osc-host", "0.0.0.0"], "--osc-allow")):
        rc = main(["live", "--model", str(ckpt), "--input", str(video), "--output", "null", "--size", "64x48",
                   "--max-frames", "2", "--osc-port", "0", *args])
        err = capfd.readouterr().err
        assert rc == 2 and needle in err and "Traceback" not in err, err
