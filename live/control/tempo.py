"""Tempo: a beat clock from MIDI clock in (mido) or Ableton Link (aalink), the beat signals, and quantized
changes.

    clock = MidiClock()                  # feed it mido messages: clock (24 per beat), start, stop, continue,
    clock.handle(msg)                    # songpos
    clock = LinkClock(log=print).start() # joins the Link session on the LAN (the `link` extra)
    clock.values                         # {"beat.phase": 0..1 within the beat, "beat.pulse": 1 on the beat,
                                         #  falling to 0 over a sixteenth}; zeros while there is no tempo
    clock.beat()                         # the running beat count now (None: no tempo)

Quantizer (`--quantize beat|bar`) holds cue recalls and preset changes until the next beat or bar (4 beats):
it sits in the live loop's per-frame hook, so a recall from any controller (OSC, MIDI, web) is delayed the
same way, and ControlSurface hands it preset changes to run on the boundary. Without a tempo nothing waits.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable

from autoencoded.extras import pip_install
from autoencoded.live.control.params import Params, ParamStore
from autoencoded.service import Service, ThreadService

TICKS_PER_BEAT = 24  # MIDI clock
CLOCK_TIMEOUT_S = 0.5  # no clock for this long: the tempo is lost
UNITS = {"beat": 1, "bar": 4}
_ZERO = {"beat.phase": 0.0, "beat.pulse": 0.0}


def beat_signals(beat: float | None) -> dict[str, float]:
    if beat is None:
        return dict(_ZERO)
    phase = beat % 1.0
    return {"beat.phase": phase, "beat.pulse": max(0.0, 1.0 - 4.0 * phase)}


class BeatClock(ABC):
    """What a tempo source gives: beat(now) and the beat signals. time.monotonic is the time base (as Link's)."""

    time_base: Callable[[], float] = staticmethod(time.monotonic)

    @abstractmethod
    def beat(self, now: float | None = None) -> float | None:
        """The running beat count at `now` (None: no tempo)."""

    @property
    @abstractmethod
    def bpm(self) -> float | None:
        """Beats per minute (None: unknown)."""

    @property
    def values(self) -> dict[str, float]:
        return beat_signals(self.beat())


class MidiClock(BeatClock):
    """MIDI clock in: 24 ticks a beat; Start resets to beat 0 (the next tick is the downbeat), Stop freezes the
    count, Continue resumes it, Song Position (in sixteenths) moves it. A clock that arrives without a Start
    (many devices send it all the time) counts from its first tick. The tempo is the smoothed tick interval."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ticks = -1
        self._last: float | None = None
        self._interval: float | None = None
        self.running = True
        self.messages = 0

    def handle(self, msg, now: float | None = None) -> None:
        now = self.time_base() if now is None else now
        kind = getattr(msg, "type", None)
        with self._lock:
            self.messages += 1
            if kind == "clock":
                if self._last is not None:
                    dt = now - self._last
                    if 0.0 < dt < CLOCK_TIMEOUT_S:  # a gap (a paused sender) says nothing about the tempo
                        self._interval = dt if self._interval is None else self._interval + 0.15 * (dt - self._interval)
                self._last = now
                if self.running:
                    self._ticks += 1
            elif kind == "start":
                self._ticks, self.running = -1, True
            elif kind == "continue":
                self.running = True
            elif kind == "stop":
                self.running = False
            elif kind == "songpos":
                self._ticks = int(msg.pos) * (TICKS_PER_BEAT // 4) - 1

    def beat(self, now: float | None = None) -> float | None:
        now = self.time_base() if now is None else now
        with self._lock:
            if self._interval is None or self._last is None or self._ticks < 0 or now - self._last > CLOCK_TIMEOUT_S:
                return None
            frac = min((now - self._last) / self._interval, 0.999) if self.running else 0.0
            return (self._ticks + frac) / TICKS_PER_BEAT

    @property
    def bpm(self) -> float | None:
        i = self._interval
        return None if i is None else 60.0 / (i * TICKS_PER_BEAT)


class MidiClockInput(BeatClock, Service):
    """MIDI clock from a port (MidiInput: reopened when the device comes back), into a MidiClock."""

    def __init__(self, device: str = "auto", *, backend=None, log: Callable[[str], object] | None = None) -> None:
        from autoencoded.live.control.midi import MidiInput

        self.midi_clock = MidiClock()
        self.input = MidiInput(self.midi_clock.handle, device, backend=backend, log=log, purpose="the MIDI clock")

    def beat(self, now: float | None = None) -> float | None:
        return self.midi_clock.beat(now)

    @property
    def bpm(self) -> float | None:
        return self.midi_clock.bpm

    def start(self) -> MidiClockInput:
        self.input.start()
        return self

    def stop(self) -> None:
        self.input.stop()


class LinkClock(BeatClock, ThreadService):
    """Ableton Link (the `link` extra: aalink). aalink needs a running asyncio loop, so the session lives on a
    thread of its own, which samples the timeline every few milliseconds; beat() extrapolates from the last
    sample at the session's tempo."""

    POLL_S = 0.005
    thread_name = "link"

    def __init__(self, bpm: float = 120.0, *, log: Callable[[str], object] | None = None) -> None:
        super().__init__()
        self.start_bpm = bpm
        self.log = log or (lambda line: None)
        self._state: tuple[float, float, float] | None = None  # (beat, tempo, monotonic time)
        self.peers = 0
        self.state = "starting"  # starting | open | unavailable | stopped

    def _stopped(self) -> None:
        self.state = "stopped"

    def _run(self) -> None:
        try:
            import aalink  # the `link` extra
        except ImportError:
            self.state = "unavailable"
            self.log(f"tempo: aalink is not installed ({pip_install('link')}); beat signals stay at 0")
            return
        try:
            asyncio.run(self._session(aalink))
        except Exception as exc:  # the show goes on without a beat
            self.state = "unavailable"
            self.log(f"tempo: Ableton Link failed ({type(exc).__name__}: {exc}); beat signals stay at 0")

    async def _session(self, aalink) -> None:
        link = aalink.Link(self.start_bpm)
        link.quantum = 4
        link.enabled = True
        self.state = "open"
        self.log(f"tempo: Ableton Link on, {link.num_peers} peer(s), {link.tempo:.1f} BPM")
        try:
            while not self._stop.is_set():
                self._state = (float(link.beat), float(link.tempo), time.monotonic())
                self.peers = int(link.num_peers)
                await asyncio.sleep(self.POLL_S)
        finally:
            link.enabled = False

    def beat(self, now: float | None = None) -> float | None:
        state = self._state
        if state is None or self.state != "open":
            return None
        beat, tempo, t = state
        now = time.monotonic() if now is None else now
        return beat + (now - t) * tempo / 60.0

    @property
    def bpm(self) -> float | None:
        state = self._state
        return None if state is None else state[1]


def next_boundary(beat: float, unit: int) -> float:
    """The first beat number after `beat` that starts a beat (unit 1) or a bar (unit 4)."""
    return (math.floor(beat / unit + 1e-9) + 1) * unit


class Quantizer:
    """Delays cue recalls (in each frame's Params) and preset changes (run via `defer`) to the next beat or bar
    of `clock`. Call it once per frame with the store's snapshot, on the engine thread."""

    def __init__(self, clock: BeatClock, unit: str, store: ParamStore) -> None:
        if unit not in UNITS:
            raise ValueError(f"--quantize takes {' or '.join(UNITS)}, got {unit!r}")
        self.clock, self.unit, self.store = clock, UNITS[unit], store
        self._lock = threading.Lock()
        self._actions: list[tuple[float | None, Callable[[], object]]] = []
        self._shown: int | None = None  # the cue recall the frames show
        self._pending: tuple[int, float] | None = None  # (cue, beat it waits for)
        self.errors = 0

    def defer(self, action: Callable[[], object]) -> None:
        """Run `action` on the next boundary (at once when there is no tempo)."""
        beat = self.clock.beat()
        if beat is None:
            action()
            return
        with self._lock:
            self._actions.append((next_boundary(beat, self.unit), action))

    def __call__(self, p: Params) -> Params:
        beat = self.clock.beat()
        due = []
        with self._lock:
            if self._actions:
                due = [action for at, action in self._actions if beat is None or beat >= at]
                self._actions = [(at, action) for at, action in self._actions if not (beat is None or beat >= at)]
        if due:
            for action in due:
                try:
                    action()
                except Exception:  # a preset that fails to apply must not cost the frame
                    self.errors += 1
            p = self.store.peek().replace(cue_store=p.cue_store)
        if self._shown is None or beat is None:
            self._shown, self._pending = p.cue_recall, None
        elif p.cue_recall != self._shown:
            if self._pending is None or self._pending[0] != p.cue_recall:
                self._pending = (p.cue_recall, next_boundary(beat, self.unit))
            if beat >= self._pending[1]:
                self._shown, self._pending = p.cue_recall, None
        else:
            self._pending = None
        return p if p.cue_recall == self._shown else p.replace(cue_recall=self._shown)
