"""ControlSurface: everything that plays the ParamStore live, started and stopped as one object.

    with ControlSurface(store, preset="noise-sweep", osc_port=9000, midi="auto",
                        on_model=pipeline.request_model, status=pipeline.stats) as controls:
        ...  # the live loop reads store.snapshot() each frame

It owns the OSC server, the MIDI input (with MIDI learn) and the current preset. `/preset NAME` (OSC) and
switch_preset() apply the preset's parameters atomically, swap its OSC aliases and MIDI map, and ask for
its model through on_model (the pipeline loads it in the background and swaps between two frames).
It never imports the pipeline: on_model, on_preset and status are plain callbacks.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from pathlib import Path

from autoencoded.errors import UserError
from autoencoded.live.control.midi import MidiInput, MidiLearn, MidiMapper
from autoencoded.live.control.osc import OscServer, parse_allow, parse_hostport
from autoencoded.live.control.params import ParamStore
from autoencoded.live.control.presets import Preset, bind_cc, load_preset, save_preset
from autoencoded.net import is_loopback
from autoencoded.service import Service
from autoencoded.text import printable


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _contents(preset: Preset) -> str:
    """What applying `preset` changed, for its confirmation line: "3 controls, MIDI map"."""
    n = len(preset.params)
    parts = [f"{n} control{'' if n == 1 else 's'}"]
    parts += [what for what, there in (("OSC aliases", preset.osc_aliases), ("MIDI map", preset.midi_cc),
                                       ("modulation", preset.mods)) if there is not None]
    return ", ".join(parts)


class ControlSurface(Service):
    """osc_port None: no OSC (the CLI's --osc-port 0); 0 here picks a free port (tests)."""

    def __init__(self, store: ParamStore, *, preset: str | Path | Preset | None = None,
                 osc_host: str = "127.0.0.1", osc_port: int | None = 9000, osc_allow=(),
                 osc_feedback: str | tuple[str, int] | None = None,
                 midi: str | None = None, midi_learn: str | None = None,
                 on_model: Callable[[str], object] | None = None,
                 on_preset: Callable[[Preset], object] | None = None,
                 status: Callable[[], dict] | None = None,
                 log: Callable[[str], None] | None = None, midi_backend=None,
                 osc_required: bool = True) -> None:
        self.store = store
        # False: a busy OSC port is one line and the show goes on without OSC (the default port)
        self.osc_required = osc_required
        self.log = log or _stderr
        self.on_model, self.on_preset, self.status = on_model, on_preset, status
        self.preset: Preset | None = None
        self._preset_ref = preset
        self._lock = threading.Lock()
        self.osc_host, self.osc_port = osc_host, osc_port
        self.osc_allow = parse_allow(osc_allow)
        self.osc_feedback = parse_hostport(osc_feedback) if isinstance(osc_feedback, str) else osc_feedback
        self.midi_device = midi
        self.midi_backend = midi_backend
        self.learn: MidiLearn | None = None
        if midi_learn:
            try:
                self.learn = MidiLearn(midi_learn, self._learned)
            except ValueError as exc:
                raise UserError(f"--midi-learn: {exc}") from None
        self.mapper = MidiMapper(store)
        self.osc: OscServer | None = None
        self.midi: MidiInput | None = None
        # set by --quantize: runs a preset's application on the next beat or bar (validation is immediate)
        self.defer: Callable[[Callable[[], None]], None] | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> ControlSurface:
        if self._preset_ref is not None:
            # the live command opened the preset's model itself (its [live] settings are defaults for the
            # command line), so starting does not ask for it a second time
            self.switch_preset(self._preset_ref, allow_path=True, request_model=False)
        if self.osc_port is not None:
            allow = None
            if not is_loopback(self.osc_host):
                if self.osc_allow:
                    allow = self.osc_allow
                else:
                    self.log(f"osc: listening on {self.osc_host} for ANY sender on the network; "
                             "restrict it with --osc-allow ADDRESS[,ADDRESS...]")
            try:
                self.osc = OscServer(self.store, self.osc_host, self.osc_port, allow=allow,
                                     feedback=self.osc_feedback, on_preset=self._osc_preset,
                                     on_model=self.on_model, status=self.status,
                                     aliases=(self.preset.osc_aliases if self.preset else None) or {},
                                     log=self.log).start()
                self.log(f"osc: listening on {self.osc_host}:{self.osc.port}")
            except UserError as exc:
                if self.osc_required:
                    raise
                self.log(f"osc: off ({exc})")
        device = self.midi_device or (self.preset.midi_device if self.preset else None)
        if device is None and self.learn is not None:
            device = "auto"
        if device is not None:
            self.midi = MidiInput(self._on_midi, device, backend=self.midi_backend, log=self.log).start()
        if self.learn is not None:
            self.log(f"midi-learn: move a control to bind it to {self.learn.target}")
        return self

    def stop(self) -> None:
        if self.osc is not None:
            self.osc.stop()
            self.osc = None
        if self.midi is not None:
            self.midi.stop()
            self.midi = None

    # -- presets ---------------------------------------------------------------------------------
    def switch_preset(self, ref: str | Path | Preset, allow_path: bool = True,
                      request_model: bool = True) -> Preset:
        """Load (UserError if invalid: nothing changes) and apply: params in one atomic update, OSC aliases
        and MIDI map replaced where the preset has them, its model requested through on_model."""
        preset = ref if isinstance(ref, Preset) else load_preset(ref, allow_path=allow_path)

        def apply() -> None:
            with self._lock:
                self.store.update(preset.params)
                if preset.osc_aliases is not None and self.osc is not None:
                    self.osc.set_aliases(preset.osc_aliases)
                if preset.midi_cc is not None:
                    self.mapper.set_map(preset.midi_cc, preset.midi_channel)
                self.preset = preset
            if self.on_preset is not None:
                self.on_preset(preset)
            self.log(f"preset: {printable(preset.name)} applied ({_contents(preset)})")  # --preset, OSC and web

        model = preset.live.get("model")
        if model and request_model and self.on_model is not None:
            self.on_model(str(model))  # loading takes a while anyway; the swap happens between two frames
        if self.defer is not None:
            self.defer(apply)
        else:
            apply()
        return preset

    def _osc_preset(self, name: str) -> None:
        self.switch_preset(name, allow_path=False)

    def save_preset(self, path: str | Path, description: str | None = None) -> Path:
        """Save the current values (with the current preset's maps and live settings) as a preset file."""
        return save_preset(path, self.store, base=self.preset, description=description)

    # -- MIDI ------------------------------------------------------------------------------------
    def _on_midi(self, msg) -> None:
        if self.learn is not None and not self.learn.done:
            self.learn.handle(msg)
            return
        self.mapper.handle(msg)

    def start_learn(self, target: str) -> str:
        """Bind the next moved MIDI control to `target` (the web remote's MIDI-learn button), opening the first
        MIDI input if none is open. Returns the target's name; ValueError for an unknown control."""
        learn = MidiLearn(target, self._learned)
        with self._lock:
            self.learn = learn
            if self.midi is None:
                self.midi = MidiInput(self._on_midi, "auto", backend=self.midi_backend, log=self.log).start()
        self.log(f"midi-learn: move a control to bind it to {learn.target}")
        return learn.target

    def _learned(self, cc: int, target: str) -> None:
        with self._lock:
            base = self.preset or Preset(name="learned", midi_cc={})
            try:
                path = bind_cc(base, cc, target)
            except UserError as exc:
                self.log(f"midi-learn: {exc}")
                return
            self.preset = base
            self.mapper.set_map(base.midi_cc or {}, base.midi_channel)
        self.log(f"midi-learn: CC {cc} -> {target}, saved to {path}")

    # -- stats -----------------------------------------------------------------------------------
    def stats(self) -> dict[str, object]:
        out: dict[str, object] = {"preset": self.preset.name if self.preset else None,
                                  "params_refused": self.store.rejected}
        if self.osc is not None:
            out["osc"] = self.osc.stats()
            out["osc_port"] = self.osc.port
        if self.midi is not None:
            out["midi"] = {"state": self.midi.state, "port": self.midi.port_name, **self.mapper.counters}
        if self.learn is not None and not self.learn.done:
            out["midi_learn"] = self.learn.target
        return out
