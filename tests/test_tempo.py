"""Tempo: MIDI clock from real mido messages, the beat signals, quantized cue recalls and preset changes,
and Ableton Link between two local peers (two processes) when aalink is installed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import mido
import pytest

from autoencoded.live.control.params import ParamStore
from autoencoded.live.control.tempo import (
    LinkClock,
    MidiClock,
    MidiClockInput,
    Quantizer,
    beat_signals,
    next_boundary,
)

from helpers import has_midi_subsystem


def clock_at(bpm: float, beats: float, start: float = 100.0, begin: str | None = "start") -> tuple[MidiClock, float]:
    """A MidiClock fed real mido messages: an optional Start, then clock ticks at `bpm` for `beats` beats."""
    c = MidiClock()
    if begin:
        c.handle(mido.Message(begin), now=start)
    dt = 60.0 / bpm / 24
    t = start
    for i in range(round(beats * 24) + 1):
        t = start + i * dt
        c.handle(mido.Message("clock"), now=t)
    return c, t


def test_midi_clock_tempo_and_phase():
    c, t = clock_at(120.0, 8)
    assert c.bpm == pytest.approx(120.0, rel=1e-6)
    assert c.beat(t) == pytest.approx(8.0)
    # between ticks the beat runs on at the tempo
    assert c.beat(t + 0.25 * 60 / 120 / 24) == pytest.approx(8.0 + 0.25 / 24)
    assert c.beat(t + 1.0) is None  # no tick for a second: the tempo is lost
    assert c.values == {"beat.phase": 0.0, "beat.pulse": 0.0}  # (now, on the real clock, is long after)
    # tempo changes are followed (smoothed over a few ticks)
    dt = 60.0 / 140 / 24
    for i in range(1, 48):
        c.handle(mido.Message("clock"), now=t + i * dt)
    assert c.bpm == pytest.approx(140.0, rel=0.01)


def test_midi_transport():
    c, t = clock_at(120.0, 3.5)
    assert c.beat(t) == pytest.approx(3.5)
    c.handle(mido.Message("stop"), now=t + 0.001)
    dt = 60.0 / 120 / 24
    for i in range(1, 13):  # clock keeps coming while stopped: the position holds
        c.handle(mido.Message("clock"), now=t + i * dt)
    assert c.beat(t + 12 * dt) == pytest.approx(3.5)
    c.handle(mido.Message("continue"), now=t + 12.5 * dt)
    c.handle(mido.Message("clock"), now=t + 13 * dt)
    assert c.beat(t + 13 * dt) == pytest.approx(3.5 + 1 / 24)
    c.handle(mido.Message("songpos", pos=16), now=t + 13.5 * dt)  # bar 2 (16 sixteenths)
    c.handle(mido.Message("clock"), now=t + 14 * dt)
    assert c.beat(t + 14 * dt) == pytest.approx(4.0)
    c.handle(mido.Message("start"), now=t + 14.5 * dt)  # the next tick is the downbeat
    c.handle(mido.Message("clock"), now=t + 15 * dt)
    assert c.beat(t + 15 * dt) == pytest.approx(0.0)
    c.handle(mido.Message("note_on", note=60), now=t + 15.5 * dt)  # other messages change nothing
    assert c.beat(t + 15 * dt) == pytest.approx(0.0) and c.bpm == pytest.approx(120.0)


def test_free_running_clock_without_start():
    c, t = clock_at(100.0, 2, begin=None)
    assert c.beat(t) == pytest.approx(2.0) and c.bpm == pytest.approx(100.0)


def test_beat_signals():
    assert beat_signals(None) == {"beat.phase": 0.0, "beat.pulse": 0.0}
    assert beat_signals(7.0) == {"beat.phase": 0.0, "beat.pulse": 1.0}
    s = beat_signals(7.125)
    assert s["beat.phase"] == pytest.approx(0.125) and s["beat.pulse"] == pytest.approx(0.5)
    assert beat_signals(7.5)["beat.pulse"] == 0.0
    assert next_boundary(7.0, 1) == 8.0 and next_boundary(7.2, 4) == 8.0 and next_boundary(8.0, 4) == 12.0


class _Beat(MidiClock):
    """A MidiClock whose beat the test sets by hand (the quantizer only asks it for beat())."""

    def __init__(self, beat):
        super().__init__()
        self.now = beat

    def beat(self, now=None):
        return self.now


def test_quantized_cue_recall_waits_for_the_bar():
    store = ParamStore()
    beat = _Beat(5.2)
    q = Quantizer(beat, "bar", store)
    assert q(store.snapshot()).cue_recall == -1
    store.press("cue/recall/3")  # from any controller
    assert q(store.snapshot()).cue_recall == -1  # held: the bar starts at beat 8
    beat.now = 7.9
    assert q(store.snapshot()).cue_recall == -1
    beat.now = 8.0
    assert q(store.snapshot()).cue_recall == 3
    assert store.peek().cue_recall == 3
    # "beat": the next beat; and with no tempo nothing waits
    q = Quantizer(beat, "beat", store)
    q(store.snapshot())
    store.set("cue/recall", 5)
    beat.now = 8.5
    assert q(store.snapshot()).cue_recall == 3
    beat.now = 9.01
    assert q(store.snapshot()).cue_recall == 5
    beat.now = None
    store.set("cue/recall", 1)
    assert q(store.snapshot()).cue_recall == 1
    with pytest.raises(ValueError, match="beat or bar"):
        Quantizer(beat, "phrase", store)


def test_quantized_preset_change_applies_on_the_beat(tmp_path, monkeypatch):
    from autoencoded.live.control.surface import ControlSurface

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    store = ParamStore()
    beat = _Beat(2.5)
    q = Quantizer(beat, "beat", store)
    surface = ControlSurface(store, osc_port=None, log=lambda line: None)
    surface.defer = q.defer
    surface.switch_preset("noise-sweep")  # validated now, applied on the beat
    assert store.peek().noise == 0.0 and surface.preset is None
    assert q(store.snapshot()).noise == 0.0
    beat.now = 3.0
    p = q(store.snapshot())
    assert p.noise > 0 and surface.preset.name == "noise-sweep"  # this very frame plays it
    with pytest.raises(Exception, match="no preset named"):
        surface.switch_preset("nope")  # a bad name fails at once, not on the beat


LINK_PEER = """
import asyncio, sys, time
from aalink import Link
async def main():
    link = Link(133.0)
    link.quantum = 4
    link.enabled = True
    print("ready", flush=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        if link.num_peers:
            break
    for _ in range(20):
        await asyncio.sleep(0.05)
        print(f"{time.monotonic()!r} {link.beat!r} {link.tempo!r} {link.num_peers}", flush=True)
asyncio.run(main())
"""


def test_link_between_two_local_peers():
    pytest.importorskip("aalink")
    lines = []
    clock = LinkClock(bpm=90.0, log=lines.append).start()
    peer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(LINK_PEER)], stdout=subprocess.PIPE, text=True)
    try:
        assert peer.stdout.readline().strip() == "ready"
        samples, peers_seen = [], 0
        for line in peer.stdout:  # while the peer is in the session, so is this clock
            t, beat, tempo, n = line.split()
            samples.append((float(t), float(beat), float(tempo), int(n), clock.beat(float(t))))
            peers_seen = max(peers_seen, clock.peers)
        assert peer.wait(timeout=60) == 0
    finally:
        if peer.poll() is None:
            peer.kill()
    try:
        assert peers_seen >= 1
        ours = [(theirs, mine) for _, theirs, _, n, mine in samples[-5:] if n >= 1 and mine is not None]
        assert ours, samples
        # one session: the same tempo (whoever set it first wins) and the same beat phase at the same moment
        assert abs(clock.bpm - samples[-1][2]) < 0.1
        for theirs, mine in ours:
            assert abs(((mine - theirs) + 0.5) % 1.0 - 0.5) < 0.02  # within 2% of a beat (10 ms at 120 BPM)
        assert any(line.startswith("tempo: Ableton Link on") for line in lines)
    finally:
        clock.stop()


def test_a_midi_clock_without_midi_says_the_clock_is_off(monkeypatch):
    """`--tempo midi:IAC` without a MIDI subsystem said "MIDI control is off": it is the clock that is off."""
    monkeypatch.setitem(sys.modules, "mido", None)  # `import mido` now raises ImportError, as without the extra
    lines = []
    clock = MidiClockInput("IAC", log=lines.append).start()
    clock.input._thread.join(timeout=30)
    clock.stop()
    assert lines == ["midi: mido is not installed (pip install 'autoencoded[midi]'); the MIDI clock is off"]
    assert clock.beat() is None


def test_a_midi_clock_without_alsa_says_the_clock_is_off():
    if has_midi_subsystem():
        pytest.skip("this machine has a MIDI subsystem (the no-subsystem path cannot happen here)")
    lines = []
    clock = MidiClockInput("IAC", log=lines.append).start()
    clock.input._thread.join(timeout=30)
    clock.stop()
    assert len(lines) == 1 and lines[0].startswith("midi: no MIDI subsystem (")
    assert lines[0].endswith("; the MIDI clock is off") and "MIDI control" not in lines[0]
