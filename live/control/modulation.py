"""The modulation matrix: signals (audio, tempo) added on top of controls' base values, every frame.

    route = parse_mod("audio.bass:noise:0.8")           # SIGNAL:CONTROL:AMOUNT[:ATTACK[:RELEASE]]
    matrix = ModMatrix([route])
    p = matrix.apply(store.snapshot(), {"audio.bass": 0.7}, dt=1 / 30)

A route follows its signal with an envelope (rising with the attack time, falling with the release time,
in seconds) and adds `amount x envelope x the control's range` to the control's base value, clamped to the
range. Amounts are -1..1: 1 sweeps the whole range. Several routes to one control add up. The store keeps
the base values (what OSC, MIDI and the web set); only the frame sees the modulated ones.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from autoencoded.errors import UserError
from autoencoded.live.audio.analysis import AUDIO_SIGNALS
from autoencoded.live.control.params import SPECS, Params, field_name

BEAT_SIGNALS = ("beat.phase", "beat.pulse")
SIGNALS = (*AUDIO_SIGNALS, *BEAT_SIGNALS)
DEFAULT_ATTACK_S = 0.005
DEFAULT_RELEASE_S = 0.15
MAX_TIME_S = 10.0


def targets() -> tuple[str, ...]:
    """What a route can modulate: the continuous controls (every float Spec of CONTROLS)."""
    return tuple(name for name, spec in SPECS.items() if spec.kind is float)


@dataclass(frozen=True)
class ModRoute:
    signal: str
    target: str
    amount: float
    attack: float = DEFAULT_ATTACK_S
    release: float = DEFAULT_RELEASE_S

    def __str__(self) -> str:
        return f"{self.signal}:{self.target}:{self.amount:g}:{self.attack:g}:{self.release:g}"


def make_route(signal: object, target: object, amount: object, attack: object = DEFAULT_ATTACK_S,
               release: object = DEFAULT_RELEASE_S) -> ModRoute:
    """Validate one route; ValueError says what is wrong in one line."""
    if signal not in SIGNALS:
        raise ValueError(f"unknown signal {signal!r} (known: {', '.join(SIGNALS)})")
    target = target.strip().lstrip("/") if isinstance(target, str) else target
    if target not in targets():
        raise ValueError(f"cannot modulate {target!r} (continuous controls: {', '.join(targets())})")
    values = []
    for what, v, lo, hi in (("amount", amount, -1.0, 1.0), ("attack", attack, 0.0, MAX_TIME_S),
                            ("release", release, 0.0, MAX_TIME_S)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
            raise ValueError(f"{what} must be a number in {lo:g}..{hi:g}" + (" (seconds)" if what != "amount" else "")
                             + f", got {v!r}")
        values.append(float(v))
    return ModRoute(signal, target, *values)


def parse_mod(text: str) -> ModRoute:
    """'audio.bass:noise:0.8[:ATTACK[:RELEASE]]' -> ModRoute; ValueError otherwise."""
    parts = [p.strip() for p in str(text).split(":")]
    if not 3 <= len(parts) <= 5:
        raise ValueError("expected SIGNAL:CONTROL:AMOUNT[:ATTACK[:RELEASE]], "
                         "e.g. audio.bass:noise:0.8 or audio.onset:noise:1:0:0.3")
    numbers = []
    for what, v in zip(("amount", "attack", "release"), parts[2:], strict=False):
        try:
            numbers.append(float(v))
        except ValueError:
            raise ValueError(f"{what} must be a number, got {v!r}") from None
    return make_route(parts[0], parts[1], *numbers)


def mod_option(text: str) -> ModRoute:
    """--mod on the command line: a ModRoute, or a UserError naming the option."""
    try:
        return parse_mod(text)
    except ValueError as exc:
        raise UserError(f"--mod {text}: {exc}") from None


class ModMatrix:
    """Routes plus their envelopes. apply() runs on the engine thread; set_routes() from anywhere."""

    def __init__(self, routes: Iterable[ModRoute] = ()) -> None:
        self._lock = threading.Lock()
        self.set_routes(routes)

    def set_routes(self, routes: Iterable[ModRoute]) -> None:
        routes = tuple(routes)
        with self._lock:
            old = dict(zip(getattr(self, "routes", ()), getattr(self, "_env", ()), strict=False))
            self.routes = routes
            self._env = [old.get(r, 0.0) for r in routes]  # a route kept across a preset change keeps its state

    @property
    def signals(self) -> set[str]:
        return {r.signal for r in self.routes}

    def offsets(self, signals: dict[str, float], dt: float) -> dict[str, float]:
        """Advance every envelope by dt seconds; -> {control: offset in units of its range}."""
        out: dict[str, float] = {}
        with self._lock:
            for i, r in enumerate(self.routes):
                x = signals.get(r.signal, 0.0)
                x = min(1.0, max(0.0, x)) if math.isfinite(x) else 0.0
                env = self._env[i]
                tau = r.attack if x > env else r.release
                env = x if tau <= 0 else env + (x - env) * (1.0 - math.exp(-max(dt, 0.0) / tau))
                self._env[i] = env
                out[r.target] = out.get(r.target, 0.0) + r.amount * env
        return out

    def apply(self, p: Params, signals: dict[str, float], dt: float) -> Params:
        if not self.routes:
            return p
        changes = {}
        for name, offset in self.offsets(signals, dt).items():
            spec = SPECS[name]
            changes[field_name(name)] = min(spec.hi, max(spec.lo, p.value(name) + offset * (spec.hi - spec.lo)))
        return p.replace(**changes)


class Modulator:
    """The live side: a ModMatrix fed by signal sources (anything with a `values` dict, e.g. AudioInput, a
    beat clock), called by the engine thread once per frame with the store's snapshot.

    `values` holds the latest signals (for OSC feedback, the web remote and the stats)."""

    def __init__(self, matrix: ModMatrix, sources: Iterable[object] = (),
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.matrix = matrix
        self.sources = list(sources)
        self.clock = clock
        self._last: float | None = None
        self.values: dict[str, float] = {}
        self.errors = 0

    def read(self) -> dict[str, float]:
        values: dict[str, float] = {}
        for s in self.sources:
            values.update(s.values)
        self.values = values
        return values

    def __call__(self, p: Params) -> Params:
        now = self.clock()
        dt = 0.0 if self._last is None else now - self._last
        self._last = now
        try:
            return self.matrix.apply(p, self.read(), dt)
        except Exception:  # a broken source must not cost a frame: play the base values
            self.errors += 1
            return p
