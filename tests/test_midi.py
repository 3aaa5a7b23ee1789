"""MIDI: CC maps with real mido messages and real .mid files, MIDI learn, the device watch, and the
no-MIDI-subsystem path as it really is on this machine."""

from __future__ import annotations

import sys

import pytest

mido = pytest.importorskip("mido", reason="the midi extra (mido) is not installed")

from autoencoded.live.control.midi import (  # noqa: E402
    MidiInput,
    MidiLearn,
    MidiMapper,
    cc_to_value,
    pick_port,
)
from autoencoded.live.control.params import ParamStore  # noqa: E402
from autoencoded.live.control.presets import load_preset  # noqa: E402

from helpers import FakeDevices, cc, has_midi_subsystem  # noqa: E402


def test_cc_scaling():
    assert cc_to_value("noise", 0) == 0.0 and cc_to_value("noise", 127) == 1.0
    assert cc_to_value("noise/max", 127) == 4.0
    assert cc_to_value("freeze", 63) == 0 and cc_to_value("freeze", 64) == 1
    assert cc_to_value("cue/recall", 0) == -1 and cc_to_value("cue/recall", 127) == 15
    assert cc_to_value("mix", 500) == 1.0 and cc_to_value("mix", -5) == 0.0


def test_nanokontrol2_map_with_real_messages():
    preset = load_preset("nanokontrol2")
    store = ParamStore()
    m = MidiMapper(store, preset.midi_cc, preset.midi_channel)
    assert m.handle(cc(0, 127)) and store.peek().noise == 1.0
    assert m.handle(cc(4, 0)) and store.peek().mix == 0.0
    assert m.handle(cc(6, 127)) and store.peek().memory == 1.0  # fader 7
    assert not m.handle(cc(0, 0, channel=3))  # the preset listens on channel 1 only
    assert store.peek().noise == 1.0 and m.counters["other_channel"] == 1
    assert not m.handle(cc(99, 10)) and m.counters["unmapped"] == 1
    assert not m.handle(mido.Message("note_on", note=60, velocity=100))
    # S1 stores cue 0 on the press edge only; M4 recalls cue 3; PLAY toggles freeze; REC holds it
    assert m.handle(cc(32, 127))
    assert not m.handle(cc(32, 127))  # still held: no second store
    assert not m.handle(cc(32, 0))
    assert store.snapshot().cue_store == (0,)
    m.handle(cc(51, 127))
    assert store.peek().cue_recall == 3
    m.handle(cc(41, 127))
    m.handle(cc(41, 0))
    assert store.peek().freeze
    m.handle(cc(41, 127))
    assert not store.peek().freeze
    m.handle(cc(45, 127))
    assert store.peek().freeze
    m.handle(cc(45, 0))
    assert not store.peek().freeze
    m.handle(cc(46, 127))
    assert store.peek().noise_seed == 1


def test_map_from_a_real_mid_file(tmp_path):
    mid = mido.MidiFile()
    track = mido.MidiTrack()
    mid.tracks.append(track)
    track.append(mido.MetaMessage("track_name", name="latent automation", time=0))
    track.append(mido.Message("program_change", program=3, time=0))
    for step in range(0, 128, 8):  # a fader sweep on CC 0, smoothing on CC 2
        track.append(mido.Message("control_change", control=0, value=step, time=10))
        track.append(mido.Message("control_change", control=2, value=127 - step, time=0))
    track.append(mido.Message("control_change", control=0, value=127, time=10))
    track.append(mido.Message("control_change", control=33, value=127, time=10))  # S2: store cue 1
    track.append(mido.Message("control_change", control=33, value=0, time=10))
    track.append(mido.Message("note_on", note=64, velocity=90, time=0))
    path = tmp_path / "automation.mid"
    mid.save(path)

    store = ParamStore()
    m = MidiMapper(store, load_preset("nanokontrol2").midi_cc, channel=1)
    readback = mido.MidiFile(path)
    applied = [m.handle(msg) for msg in readback.tracks[0] if not msg.is_meta]
    p = store.snapshot()
    assert p.noise == 1.0 and p.smooth == pytest.approx(7 / 127)
    assert p.cue_store == (1,)
    assert sum(applied) == 16 * 2 + 1 + 1
    assert m.counters["messages"] == len(applied)


def test_set_map_swaps_the_whole_map():
    store = ParamStore()
    m = MidiMapper(store, {1: "noise"})
    m.set_map({1: "smooth", 2: "cue/recall/4"}, channel=None)
    m.handle(cc(1, 127, channel=9))
    m.handle(cc(2, 127))
    p = store.peek()
    assert p.noise == 0.0 and p.smooth == 1.0 and p.cue_recall == 4
    assert m.cc_map == {1: "smooth", 2: "cue/recall/4"}
    with pytest.raises(ValueError):
        m.set_map({3: "volume"})


def test_midi_learn_binds_the_next_control_change():
    learned = []
    learn = MidiLearn("noise/drift", lambda c, t: learned.append((c, t)))
    assert not learn.handle(mido.Message("note_on", note=1))
    assert learn.handle(cc(21, 64))
    assert not learn.handle(cc(22, 64))
    assert learned == [(21, "noise/drift")]
    assert MidiLearn("memory", lambda c, t: learned.append((c, t))).handle(cc(7, 1))  # memory is learnable too
    assert learned[-1] == (7, "memory")
    with pytest.raises(ValueError):
        MidiLearn("volume", print)


def test_pick_port():
    names = ["Midi Through:Midi Through Port-0 14:0", "nanoKONTROL2:nanoKONTROL2 MIDI 1 20:0"]
    assert pick_port(names, "auto") == names[1]
    assert pick_port(names, "nanokontrol") == names[1]
    assert pick_port(names, "launchpad") is None
    assert pick_port(names[:1], "auto") is None


def test_no_midi_subsystem_is_one_line_and_quiet(capfd):
    if has_midi_subsystem():
        pytest.skip("this machine has a MIDI subsystem (the no-subsystem path cannot happen here)")
    lines = []
    inp = MidiInput(lambda m: None, "auto", log=lines.append).start()
    inp._thread.join(timeout=30)
    assert inp.state == "unavailable"
    assert len(lines) == 1 and lines[0].startswith("midi: no MIDI subsystem") and "\n" not in lines[0]
    assert "ALSA" not in capfd.readouterr().err
    inp.stop()


def test_mido_missing_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "mido", None)  # `import mido` now raises ImportError
    lines = []
    inp = MidiInput(lambda m: None, "auto", log=lines.append).start()
    inp._thread.join(timeout=30)
    assert inp.state == "unavailable" and lines == [
        "midi: mido is not installed (pip install 'autoencoded[midi]'); MIDI control is off"]


def test_device_that_vanishes_is_reopened_when_it_returns():
    store = ParamStore()
    mapper = MidiMapper(store, {0: "noise"})
    devices = FakeDevices(["Midi Through Port-0"])
    lines = []
    inp = MidiInput(mapper.handle, "nanoKONTROL2", backend=devices, log=lines.append)
    inp.poll_once()
    assert inp.state == "waiting" and devices.ports == []
    devices.names.append("nanoKONTROL2 MIDI 1")
    inp.poll_once()
    assert inp.state == "open" and inp.opens == 1
    devices.ports[-1].callback(cc(0, 127))
    assert store.peek().noise == 1.0
    devices.names.remove("nanoKONTROL2 MIDI 1")  # unplugged: rtmidi says nothing, the poll notices
    inp.poll_once()
    assert inp.state == "waiting" and devices.ports[0].closed
    devices.names.append("nanoKONTROL2 MIDI 1")
    devices.fail_open = True
    inp.poll_once()
    assert inp.state == "waiting"
    devices.fail_open = False
    inp.poll_once()
    assert inp.state == "open" and inp.opens == 2
    devices.ports[-1].callback(cc(0, 0))
    assert store.peek().noise == 0.0
    assert any("disconnected" in line for line in lines)


def test_handler_errors_do_not_escape_the_callback():
    lines = []

    def bad(_msg):
        raise RuntimeError("boom")

    devices = FakeDevices(["dev"])
    inp = MidiInput(bad, "auto", backend=devices, log=lines.append)
    inp.poll_once()
    devices.ports[-1].callback(cc(1, 1))
    assert lines[-1] == "midi: RuntimeError: boom"


def test_thread_start_and_stop():
    devices = FakeDevices(["dev"])
    inp = MidiInput(lambda m: None, "auto", backend=devices, poll_s=0.01, log=lambda s: None).start()
    import time
    deadline = time.monotonic() + 30
    while inp.state != "open" and time.monotonic() < deadline:
        time.sleep(0.005)
    inp.stop()
    assert inp.state == "stopped" and devices.ports[-1].closed


def test_port_names_are_printed_escaped():
    """Port names come from devices and other apps (a network MIDI session names itself): issue 23 item 6,
    every name seen from outside is printed escaped."""
    evil = "evil\x1b[31mred\x1b]0;pwned\x07"
    devices = FakeDevices([evil])
    lines = []
    inp = MidiInput(lambda m: None, "nanoKONTROL2", backend=devices, log=lines.append)
    inp.poll_once()  # "no input matching ... (ports: <the names>)"
    inp.device = "evil"
    inp.poll_once()  # "listening on <the name>"
    devices.names.clear()
    inp.poll_once()  # "<the name> disconnected"
    devices.names.append(evil)
    devices.fail_open = True
    inp.state = "open"
    inp.poll_once()  # "cannot open <the name> (...)"
    assert len(lines) == 4, lines
    assert all("\x1b" not in line and "\x07" not in line for line in lines), lines
    assert all("evil\\x1b[31mred\\x1b]0;pwned\\x07" in line for line in lines), lines
