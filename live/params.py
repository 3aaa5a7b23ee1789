"""The one parameter store for live latent controls, shared by OSC, MIDI, presets and the engine.

Writers (OSC and MIDI threads, preset loads) call `set`; the engine thread calls `snapshot()` once per
frame and gets an immutable Params. Values are clamped to their range; NaN and wrong types are refused
(counted), never applied. The latest value wins.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from dataclasses import dataclass

N_CUES = 16


@dataclass(frozen=True)
class Spec:
    kind: type
    lo: float | None
    hi: float | None
    default: object
    help: str


# name -> spec; names are the OSC addresses without the leading slash
SPECS: dict[str, Spec] = {
    "noise": Spec(float, 0.0, 1.0, 0.0, "latent noise amount: 0 decodes the mean, 1 the strongest dream"),
    "noise/max": Spec(float, 0.0, 4.0, 1.0, "sigma of the noise at amount 1 (in units of the encoder's sigma)"),
    "noise/drift": Spec(float, 0.0, 1.0, 0.1, "how fast the noise pattern evolves: 0 frozen, 1 new every frame"),
    "noise/seed": Spec(int, 0, 2**31 - 1, 0, "reseed the noise pattern"),
    "smooth": Spec(float, 0.0, 1.0, 0.0, "temporal smoothing of z (anti-flicker)"),
    "freeze": Spec(int, 0, 1, 0, "hold the current latent"),
    "cue/recall": Spec(int, -1, N_CUES - 1, -1, "blend toward stored latent N (-1: none)"),
    "cue/mix": Spec(float, 0.0, 1.0, 1.0, "how far to blend toward the recalled cue"),
    "mix": Spec(float, 0.0, 1.0, 1.0, "dry/wet: 0 the input, 1 the model's output"),
}


@dataclass(frozen=True)
class Params:
    noise: float = 0.0
    noise_max: float = 1.0
    noise_drift: float = 0.1
    noise_seed: int = 0
    smooth: float = 0.0
    freeze: bool = False
    cue_recall: int = -1
    cue_mix: float = 1.0
    mix: float = 1.0
    # cue slots to store the current latent into, drained by the frame that sees them
    cue_store: tuple[int, ...] = ()
    version: int = 0

    def values(self) -> dict[str, float | int]:
        """The controls by OSC name (for /status replies and saving presets)."""
        return {name: _get(self, name) for name in SPECS}


def _attr(name: str) -> str:
    return name.replace("/", "_")


def _get(p: Params, name: str):
    v = getattr(p, _attr(name))
    return int(v) if isinstance(v, bool) else v


def coerce(name: str, value: object) -> float | int:
    """Validate and clamp one value for `name`; raises ValueError (bad type, NaN, unknown name)."""
    spec = SPECS.get(name)
    if spec is None:
        raise ValueError(f"unknown parameter {name!r}")
    if isinstance(value, bool):
        value = int(value)
    if not isinstance(value, (int, float)):
        raise ValueError(f"{name} expects a number, got {type(value).__name__}")
    if isinstance(value, float) and math.isnan(value):
        raise ValueError(f"{name}: NaN")
    if spec.kind is int:
        if isinstance(value, float):
            if math.isinf(value):
                value = spec.hi if value > 0 else spec.lo
            value = int(round(value))
    else:
        value = float(value)
    lo, hi = spec.lo, spec.hi
    if lo is not None and value < lo:
        value = spec.kind(lo)
    if hi is not None and value > hi:
        value = spec.kind(hi)
    return value


class ParamStore:
    """Thread-safe holder of the current Params. `snapshot()` never blocks for long (one lock, no I/O)."""

    def __init__(self, **initial: object) -> None:
        self._lock = threading.Lock()
        self._p = Params()
        self._pending_cues: list[int] = []
        self.rejected = 0
        for k, v in initial.items():
            self.set(k.replace("_", "/", 1) if k.startswith(("noise_", "cue_")) else k, v)

    def set(self, name: str, value: object) -> bool:
        """Set one control by OSC name. Returns False (and counts) when the value is refused."""
        try:
            v = coerce(name, value)
        except ValueError:
            with self._lock:
                self.rejected += 1
            return False
        attr = _attr(name)
        if attr == "freeze":
            v = bool(v)
        with self._lock:
            self._p = dataclasses.replace(self._p, **{attr: v}, version=self._p.version + 1)
        return True

    def update(self, values: dict[str, object]) -> int:
        """Set several controls; returns how many were refused."""
        return sum(0 if self.set(k, v) else 1 for k, v in values.items())

    def store_cue(self, slot: object) -> bool:
        try:
            n = coerce("cue/recall", slot)
        except ValueError:
            n = -1
        if n < 0:
            with self._lock:
                self.rejected += 1
            return False
        with self._lock:
            self._pending_cues.append(int(n))
        return True

    def snapshot(self) -> Params:
        with self._lock:
            p = self._p
            if self._pending_cues:
                p = dataclasses.replace(p, cue_store=tuple(self._pending_cues))
                self._pending_cues.clear()
            return p

    def peek(self) -> Params:
        with self._lock:
            return self._p
