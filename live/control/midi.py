"""MIDI control (the `midi` extra: mido + python-rtmidi): CC -> control maps from presets, MIDI learn, and
an input that survives its device vanishing.

CC values 0..127 map linearly onto a parameter's range (freeze: >= 64 is on); triggers (cue/store/N,
cue/recall/N, noise/reseed, freeze/toggle) fire when a button goes from below 64 to 64 or more.

Without a MIDI subsystem (no ALSA sequencer, as in containers) rtmidi raises an OSError subclass and ALSA
prints to stderr: MidiInput says so in one line (ALSA's noise silenced) and the live loop keeps running.
A vanished device raises nothing, so the port list is polled and the device reopened when it returns.
Port names come from devices and other apps (network MIDI sessions too): they are printed escaped.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable

from autoencoded import stderr
from autoencoded.extras import pip_install
from autoencoded.live.control.params import ROW, SPECS, ParamStore, parse_target, target_name
from autoencoded.service import ThreadService
from autoencoded.text import printable


def cc_to_value(name: str, value: int) -> float | int:
    """Scale a CC value (0..127) onto the parameter's range."""
    spec = SPECS[name]
    x = min(max(int(value), 0), 127) / 127.0
    v = spec.lo + x * (spec.hi - spec.lo)
    return int(round(v)) if spec.kind is int else v


class MidiMapper:
    """Turns mido messages into ParamStore writes using a preset's CC map. Thread-safe to remap."""

    def __init__(self, store: ParamStore, cc_map: dict[int, str] | None = None,
                 channel: int | None = None) -> None:
        self.store = store
        self.counters = {"messages": 0, "applied": 0, "unmapped": 0, "other_channel": 0}
        self._last: dict[tuple[int, int], int] = {}
        self.set_map(cc_map or {}, channel)

    def set_map(self, cc_map: dict[int, str], channel: int | None = None) -> None:
        """channel is 1..16 as printed on devices (None: every channel)."""
        parsed = {int(cc): parse_target(t) for cc, t in cc_map.items()}
        self._map, self.channel = parsed, channel

    @property
    def cc_map(self) -> dict[int, str]:
        return {cc: target_name(key, slot) for cc, (key, slot) in self._map.items()}

    def handle(self, msg) -> bool:
        """Apply one mido message; returns True when it changed a control."""
        self.counters["messages"] += 1
        if getattr(msg, "type", None) != "control_change":
            return False
        if self.channel is not None and msg.channel != self.channel - 1:
            self.counters["other_channel"] += 1
            return False
        target = self._map.get(msg.control)
        key = (msg.channel, msg.control)
        previous = self._last.get(key, 0)
        self._last[key] = msg.value
        if target is None:
            self.counters["unmapped"] += 1
            return False
        key, slot = target
        if key in SPECS:
            ok = self.store.set(key, cc_to_value(key, msg.value))
        elif msg.value >= 64 > previous:  # a button fires on the press edge only
            ok = self.store.press(target_name(key, slot))
        else:
            return False
        self.counters["applied"] += ok
        return ok


class MidiLearn:
    """`--midi-learn PARAM`: the next control change binds its CC to PARAM, then `on_learned(cc, target)`."""

    def __init__(self, target: str, on_learned: Callable[[int, str], None]) -> None:
        key, slot = parse_target(target)  # ValueError for an unknown control
        if key.endswith(ROW) and slot is None:
            raise ValueError(f"name the button's slot: {key[:-len(ROW)]}/N")
        self.target = target_name(key, slot)
        self.on_learned = on_learned
        self.done = False

    def handle(self, msg) -> bool:
        if self.done or getattr(msg, "type", None) != "control_change":
            return False
        self.done = True
        self.on_learned(msg.control, self.target)
        return True


def pick_port(names: list[str], device: str) -> str | None:
    """'auto': the first port that is not a software pass-through; else the first name containing `device`."""
    if device == "auto":
        real = [n for n in names if "through" not in n.lower() and "rtmidi" not in n.lower()]
        return real[0] if real else None
    for n in names:
        if device.lower() in n.lower():
            return n
    return None


class MidiInput(ThreadService):
    """Listens on a MIDI input port from a background thread and feeds `handler(msg)`.

    `backend` is mido (default) or anything with get_input_names() and open_input(name, callback=...):
    the device boundary, so reconnection can be exercised without hardware. `purpose` is what is off
    when there is no MIDI here ("MIDI control", "the MIDI clock").
    """

    thread_name = "midi-input"
    join_s = 5.0

    def __init__(self, handler: Callable[[object], object], device: str = "auto", *,
                 poll_s: float = 1.0, backend=None, log: Callable[[str], None] | None = None,
                 purpose: str = "MIDI control") -> None:
        super().__init__()
        self.handler = handler
        self.device = device
        self.poll_s = poll_s
        self.backend = backend
        self.purpose = purpose
        self.log = log or (lambda line: stderr.write_line(sys.stderr, f"{line}\n"))
        self.port_name: str | None = None
        self.opens = 0
        self.state = "starting"  # starting | waiting | open | unavailable | stopped
        self._port = None

    def _stopped(self) -> None:
        self._close()
        self.state = "stopped"

    def _backend(self):
        if self.backend is None:
            import mido  # the `midi` extra

            self.backend = mido
        return self.backend

    def _on_message(self, msg) -> None:
        try:
            self.handler(msg)
        except Exception as exc:  # a handler bug must not kill rtmidi's thread
            self.log(f"midi: {type(exc).__name__}: {printable(exc)}")

    def _close(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            with contextlib.suppress(Exception):
                port.close()

    def poll_once(self) -> None:
        """One step of the device watch: open the device when it is there, drop it when it vanished."""
        with stderr.silenced():
            names = list(self._backend().get_input_names())
        if self._port is not None:
            if self.port_name in names:
                return
            self.log(f"midi: {printable(self.port_name)} disconnected; waiting for it to come back")
            self._close()
            self.state = "waiting"
        name = pick_port(names, self.device)
        if name is None:
            if self.state != "waiting":
                ports = ", ".join(printable(n, 80) for n in names[:20]) or "none"
                self.log(f"midi: no input matching {self.device!r} (ports: {ports}); "
                         "waiting for it")
            self.state = "waiting"
            return
        try:
            with stderr.silenced():
                self._port = self._backend().open_input(name, callback=self._on_message)
        except Exception as exc:  # unplugged between listing and opening, or busy: try again next poll
            if self.state != "waiting":
                self.log(f"midi: cannot open {printable(name)} ({type(exc).__name__}: {printable(exc)}); retrying")
            self.state = "waiting"
            return
        self.port_name = name
        self.opens += 1
        self.state = "open"
        self.log(f"midi: listening on {printable(name)}")

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.poll_once()
                self._stop.wait(self.poll_s)
        except ImportError:
            self.state = "unavailable"
            self.log(f"midi: mido is not installed ({pip_install('midi')}); {self.purpose} is off")
        except OSError as exc:  # rtmidi.SystemError and friends: no MIDI subsystem on this machine
            self.state = "unavailable"
            self.log(f"midi: no MIDI subsystem ({type(exc).__name__}: {printable(str(exc).strip())}); "
                     f"{self.purpose} is off")
        except Exception as exc:
            self.state = "unavailable"
            self.log(f"midi: {type(exc).__name__}: {printable(exc)}; {self.purpose} is off")
        finally:
            self._close()
