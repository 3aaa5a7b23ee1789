"""Stage: what a live show has around its loop besides OSC and MIDI, set up and torn down as one object:
the web remote (with its preview), live audio in, a tempo source, the modulation matrix and quantize.

    stage = Stage(store, web="127.0.0.1:8080", audio="default", mods=[...], tempo="link", quantize="bar")
    pipeline = Pipeline(..., sinks=[*sinks, *stage.sinks], modulate=stage.modulate)
    stage.start(surface=controls, status=pipeline.stats, on_model=pipeline.request_model)
    ...
    stage.stop()

Everything that can be wrong on the command line fails in the constructor (UserError, one line) before a
camera or a model opens; everything that is missing at run time (no audio device, no Link peers, no MIDI)
is one line in the log and the show goes on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from autoencoded.errors import UserError
from autoencoded.live.control.modulation import ModMatrix, ModRoute, Modulator
from autoencoded.live.control.params import Params, ParamStore
from autoencoded.live.control.tempo import UNITS, BeatClock, LinkClock, MidiClockInput, Quantizer

SIGNAL_FEEDBACK_S = 1 / 30  # /audio/* and /beat/* to --osc-feedback at this interval


def parse_tempo(spec: str | None) -> tuple[str, str] | None:
    """--tempo link | midi[:NAME] -> ("link", "") or ("midi", NAME or "auto")."""
    if spec is None:
        return None
    kind, _, name = spec.partition(":")
    if kind == "link" and not name:
        return "link", ""
    if kind == "midi":
        return "midi", name.strip() or "auto"
    raise UserError(f"--tempo takes link or midi[:PORT] (e.g. midi:IAC), got {spec!r}")


class Stage:
    def __init__(self, store: ParamStore, *, web: str | None = None, web_required: bool = True,
                 audio: str | None = None, mods: Sequence[ModRoute] = (), tempo: str | None = None,
                 quantize: str | None = None, log: Callable[[str], object] = print, midi_backend=None) -> None:
        from autoencoded.live.web.server import parse_web, web_token

        self.store, self.log = store, log
        self.web_at = parse_web(web) if web is not None else None
        if self.web_at is not None:
            web_token()  # a $AUTOENCODED_WEB_TOKEN the URL cannot carry: one line now, not a 401 later
        self.web_required = web_required
        self.tempo_spec = parse_tempo(tempo)
        if quantize is not None and quantize not in UNITS:
            raise UserError(f"--quantize takes beat or bar, got {quantize!r}")
        if quantize is not None and self.tempo_spec is None:
            raise UserError("--quantize needs a beat: add --tempo link or --tempo midi[:PORT]")
        beat_mods = sorted({r.signal for r in mods if r.signal.startswith("beat.")})
        if beat_mods and self.tempo_spec is None:
            raise UserError(f"--mod {beat_mods[0]}: beat signals need --tempo link or --tempo midi[:PORT]")
        self.audio_spec, self.quantize_unit, self.midi_backend = audio, quantize, midi_backend
        self.cli_mods = list(mods)
        self.matrix = ModMatrix(mods)
        self.preview = None
        if self.web_at is not None:
            from autoencoded.live.web.preview import Preview

            self.preview = Preview()
        self.audio = None
        self.clock: BeatClock | None = None
        self.quantizer: Quantizer | None = None
        self.modulator = Modulator(self.matrix)
        self.web = None
        self.surface = None
        self._stop = threading.Event()
        self._feedback: threading.Thread | None = None
        self.errors = 0

    @property
    def sinks(self) -> list:
        return [self.preview] if self.preview is not None else []

    # -- the per-frame hook (engine thread) ---------------------------------------------------------
    def modulate(self, p: Params) -> Params:
        try:
            if self.quantizer is not None:
                p = self.quantizer(p)
            return self.modulator(p)
        except Exception:  # never costs a frame: it plays the store's values
            self.errors += 1
            return p

    def on_preset(self, preset) -> None:
        """A preset with [[mod]] tables replaces the routes (on top of the command line's --mod)."""
        if preset.mods is not None:
            self.matrix.set_routes([*self.cli_mods, *preset.mods])

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self, *, surface=None, status: Callable[[], dict] | None = None,
              on_model: Callable[[str], object] | None = None) -> Stage:
        self.surface = surface
        if surface is not None and surface.preset is not None:
            self.on_preset(surface.preset)
        if self.audio_spec is not None:
            from autoencoded.live.audio.device import AudioInput

            self.audio = AudioInput(self.audio_spec, log=self.log).start()
            self.modulator.sources.append(self.audio)
        if self.tempo_spec is not None:
            kind, name = self.tempo_spec
            if kind == "link":
                self.clock = LinkClock(log=self.log).start()
            else:
                self.clock = MidiClockInput(name, backend=self.midi_backend, log=self.log).start()
            self.modulator.sources.append(self.clock)
            if self.quantize_unit is not None:
                self.quantizer = Quantizer(self.clock, self.quantize_unit, self.store)
                if surface is not None:
                    surface.defer = self.quantizer.defer
        if self.web_at is not None:
            self._start_web(surface, status, on_model)
        osc = getattr(surface, "osc", None)
        if osc is not None and osc.feedback is not None and self.modulator.sources:
            self._feedback = threading.Thread(target=self._send_signals, args=(osc,), name="signal-feedback",
                                              daemon=True)
            self._feedback.start()
        return self

    def _start_web(self, surface, status, on_model) -> None:
        from autoencoded.live.web.app import Remote
        from autoencoded.live.web.server import WebServer

        def show_status() -> dict:
            out = dict(status() if status is not None else {})
            if surface is not None:
                out.update(surface.stats())
            out.update(self.stats())
            return out

        remote = Remote(self.store, surface=surface, on_model=on_model, status=show_status, preview=self.preview,
                        signals=(lambda: self.modulator.values) if self.modulator.sources else None, log=self.log)
        host, port = self.web_at
        try:
            self.web = WebServer(remote, host, port, log=self.log).start()
        except UserError as exc:
            if self.web_required:
                raise
            self.log(f"web: off ({exc})")
            return
        lan = "" if self.web.loopback else " (open to the network: the token in it is required)"
        self.log(f"web: remote on {self.web.url}{lan}")

    def _send_signals(self, osc) -> None:
        while not self._stop.wait(SIGNAL_FEEDBACK_S):
            osc.send_signals(self.modulator.values or self.modulator.read())

    def stats(self) -> dict:
        out: dict[str, object] = {}
        if self.audio is not None:
            out["audio"] = self.audio.state
        if self.clock is not None:
            bpm = self.clock.bpm
            out["tempo_bpm"] = round(bpm, 2) if bpm else None
            if isinstance(self.clock, LinkClock):
                out["link_peers"] = self.clock.peers
        if self.matrix.routes:
            out["mods"] = [str(r) for r in self.matrix.routes]
        return out

    def stop(self) -> None:
        self._stop.set()
        if self._feedback is not None:
            self._feedback.join(timeout=1)
        if self.web is not None:
            self.web.stop()
        for part in (self.audio, self.clock):
            if part is not None:
                part.stop()
