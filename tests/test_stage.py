"""The Stage around the live loop (web remote, audio in, tempo, modulation, quantize) and the options of
`autoencoded live` that build it: bad options are one line and exit 2, missing devices one line and the show
goes on, signals go out as OSC feedback over real UDP, and `autoencoded live --input demo` serves the remote."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from pythonosc.osc_bundle import OscBundle

from autoencoded.errors import UserError
from autoencoded.live.control.modulation import parse_mod
from autoencoded.live.control.params import ParamStore
from autoencoded.live.control.presets import load_preset
from autoencoded.live.control.surface import ControlSurface
from autoencoded.live.stage import Stage, parse_tempo

from helpers import cli, sender


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("AUTOENCODED_PRESETS", raising=False)
    monkeypatch.delenv("AUTOENCODED_WEB_TOKEN", raising=False)


def test_options_are_checked_before_anything_opens():
    assert parse_tempo("link") == ("link", "") and parse_tempo("midi") == ("midi", "auto")
    assert parse_tempo("midi:IAC Driver") == ("midi", "IAC Driver") and parse_tempo(None) is None
    store = ParamStore()
    for kwargs, why in [({"tempo": "ableton"}, "--tempo takes link or midi"),
                        ({"quantize": "bar"}, "--quantize needs a beat"),
                        ({"mods": [parse_mod("beat.pulse:mix:-1")]}, "beat signals need --tempo"),
                        ({"web": "nope"}, "--web expects"), ({"quantize": "phrase", "tempo": "link"}, "beat or bar")]:
        with pytest.raises(UserError, match=why):
            Stage(store, **kwargs)


def test_cli_refusals_are_one_line(capsys):
    for args, why in [(["--mod", "audio.bass:freeze:1"], "--mod audio.bass:freeze:1: cannot modulate 'freeze'"),
                      (["--quantize", "bar"], "--quantize needs a beat"), (["--web", "x:y"], "--web expects"),
                      (["--tempo", "clock"], "--tempo takes link or midi")]:
        assert cli("live", "--input", "demo", "--output", "null", "--osc-port", "0", *args) == 2
        err = capsys.readouterr().err
        assert why in err and err.count("\n") == 1, err


def test_modulation_and_quantize_in_the_frame_hook():
    store = ParamStore(noise=0.2)

    class Loud:
        values = {"audio.bass": 1.0}

    stage = Stage(store, mods=[parse_mod("audio.bass:noise:0.5:0:0")], web=None)
    stage.modulator.sources.append(Loud())
    assert stage.modulate(store.snapshot()).noise == pytest.approx(0.7)
    assert store.peek().noise == pytest.approx(0.2)
    # a preset's [[mod]] replaces the routes on top of the command line's
    stage.on_preset(load_preset("default"))  # no [[mod]]: the routes stay
    assert len(stage.matrix.routes) == 1
    preset = load_preset("default")
    preset.mods = [parse_mod("audio.bass:mix:-1:0:0")]
    stage.on_preset(preset)
    p = stage.modulate(store.snapshot())
    assert p.noise == pytest.approx(0.7) and p.mix == 0.0


def test_no_audio_device_is_one_line_and_the_show_goes_on():
    pytest.importorskip("sounddevice")
    lines = []
    store = ParamStore()
    stage = Stage(store, audio="no such microphone", mods=[parse_mod("audio.level:noise:1")], log=lines.append)
    stage.start()
    try:
        deadline = time.monotonic() + 10
        while not lines and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stage.modulate(store.snapshot()).noise == 0.0
        assert stage.stats()["audio"] == "unavailable"
    finally:
        stage.stop()
    assert len(lines) == 1 and lines[0].startswith("audio: no input 'no such microphone'")


def test_signals_go_out_as_osc_feedback():
    listener = sender()
    listener.settimeout(10)
    port = listener.getsockname()[1]
    store = ParamStore()

    class Audio:
        values = {"audio.level": 0.5, "audio.onset": 1.0}

    surface = ControlSurface(store, osc_port=0, osc_feedback=f"127.0.0.1:{port}", log=lambda line: None).start()
    stage = Stage(store, log=lambda line: None)
    stage.modulator.sources.append(Audio())
    stage.start(surface=surface)
    try:
        data, _ = listener.recvfrom(65536)
        got = {m.address: m.params for m in OscBundle(data)}
        assert got == {"/audio/level": [0.5], "/audio/onset": [1.0]}
        # the counter moves just after the send: the datagram can arrive first
        deadline = time.monotonic() + 5
        while surface.osc.counters["signal_feedback"] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert surface.osc.counters["signal_feedback"] >= 1
    finally:
        stage.stop()
        surface.stop()
        listener.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_live_demo_serves_the_remote(tmp_path):
    """The done-when: `autoencoded live --input demo` serves the remote; a request moves the noise."""
    port = _free_port()
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-m", "autoencoded", "live", "--input", "demo", "--output", "null",
                             "--osc-port", "0", "--web", str(port), "--duration", "300"],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("web: remote on"):
                break
        assert lines[-1].strip() == f"web: remote on http://127.0.0.1:{port}/", lines
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=60) as http:
            assert http.post("/api/v1/params", json={"noise": 0.6}).json() == {"values": {"noise": 0.6}}
            deadline = time.monotonic() + 120
            status = {}
            while time.monotonic() < deadline and not status.get("frames_out"):
                status = http.get("/api/v1/status").json()
                time.sleep(0.2)
            assert status["frames_out"] > 0 and status["model"] and status["sinks"] == ["null", "web preview"]
            assert http.get("/api/v1/params").json()["controls"]["noise"]["value"] == 0.6
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) in (0, 130)  # SIGTERM stops it like Ctrl-C
        rest = proc.stderr.read()
        assert "Traceback" not in rest and re.search(r"stopped \(interrupted\)", rest), rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_busy_default_web_port_is_one_line_and_an_explicit_one_an_error(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        store = ParamStore()
        lines = []
        stage = Stage(store, web=f"127.0.0.1:{port}", web_required=False, log=lines.append)
        stage.start()
        stage.stop()
        assert stage.web is None and len(lines) == 1 and lines[0].startswith(f"web: off (web 127.0.0.1:{port} is in use")
        assert cli("live", "--input", "demo", "--output", "null", "--osc-port", "0", "--web", str(port),
                   "--duration", "1") == 2
        assert f"web 127.0.0.1:{port} is in use" in capsys.readouterr().err


def test_200_requests_a_second_are_served_while_the_loop_runs():
    """Correctness under the issue's load (the fps ratio is measured by benchmarks/bench_web.py): every request
    of a 200/s burst is answered, and the loop keeps making frames meanwhile."""
    import cv2

    from autoencoded.live.engines import open_engine
    from autoencoded.live.io.sinks import NullSink
    from autoencoded.live.io.sources import ImageFolderSource
    from autoencoded.live.loop.pipeline import Pipeline

    from helpers import synthetic_frame

    store = ParamStore()
    stage = Stage(store, web="127.0.0.1:0", log=lambda line: None)
    folder = Path(tempfile.mkdtemp())
    cv2.imwrite(str(folder / "a.png"), synthetic_frame(1, 320, 180))
    pipeline = Pipeline(ImageFolderSource(folder, fps=15), open_engine(None, backend="onnxruntime", log=lambda m: None),
                        [NullSink(), *stage.sinks], params=store, fps=15, size=(320, 180), log=lambda m: None,
                        modulate=stage.modulate).start()
    stage.start(status=pipeline.stats, on_model=pipeline.request_model)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{stage.web.port}/", trust_env=False, timeout=60) as http:
            deadline = time.monotonic() + 120
            while pipeline.stats()["frames_processed"] < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            before = pipeline.stats()["frames_processed"]
            t0 = time.perf_counter()
            codes = []
            for i in range(200):
                time.sleep(max(0.0, t0 + i / 200 - time.perf_counter()))
                r = (http.post("api/v1/params", json={"noise": i / 200}) if i % 2 else http.get("api/v1/status"))
                codes.append(r.status_code)
            assert codes == [200] * 200
            deadline = time.monotonic() + 120
            while pipeline.stats()["frames_processed"] <= before + 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert pipeline.stats()["frames_processed"] > before + 2 and pipeline.running
            assert store.peek().noise == pytest.approx(199 / 200)
    finally:
        stage.stop()
        pipeline.stop()




@pytest.mark.skipif(sys.platform != "linux", reason="an ALSA file device")
def test_live_listens_to_an_audio_device(tmp_path):
    """`live --audio kicks --mod audio.onset:noise:1`: a real PortAudio input (an ALSA device that plays a file)
    feeds the signals the remote shows."""
    pytest.importorskip("sounddevice")
    from helpers import alsa_file_device, kick_track

    samples, _ = kick_track(seconds=3.0, rate=48000)
    alsa_file_device(tmp_path, samples)
    port = _free_port()
    env = dict(os.environ, HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "config"))
    proc = subprocess.Popen([sys.executable, "-m", "autoencoded", "live", "--input", "demo", "--output", "null",
                             "--osc-port", "0", "--web", str(port), "--duration", "300", "--audio", "kicks",
                             "--mod", "audio.onset:noise:1"], stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines = []
        for line in proc.stderr:
            lines.append(line.strip())
            if line.startswith("web: remote on"):
                break
        assert lines and lines[-1].startswith("web: remote on"), lines  # not the end of the log
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=60) as http:
            deadline = time.monotonic() + 120
            status = {}
            while time.monotonic() < deadline and not (status.get("signals") or {}).get("audio.level"):
                status = http.get("/api/v1/status").json()
                time.sleep(0.1)
        assert status["audio"] == "open" and status["signals"]["audio.level"] > 0, status
        assert set(status["signals"]) >= {"audio.level", "audio.bass", "audio.mid", "audio.high", "audio.onset"}
        assert status["mods"] == ["audio.onset:noise:1:0.005:0.15"]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    rest = proc.stderr.read()
    assert "Traceback" not in rest
    assert any(line.startswith("audio: listening to kicks") for line in lines + rest.splitlines()), lines
