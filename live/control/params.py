"""The one parameter store for live latent controls, shared by OSC, MIDI, presets and the engine.

Writers (OSC and MIDI threads, preset loads) call `set`; the engine thread calls `snapshot()` once per
frame and gets an immutable Params. Values are clamped to their range; NaN and wrong types are refused
(counted), never applied. The latest value wins.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
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


# one-shot actions beside the parameters, shared by OSC addresses and MIDI maps:
#   cue/store/N, cue/recall/N (N in 0..15: fire on press), noise/reseed (seed + 1), freeze/toggle
TRIGGERS = ("cue/store", "cue/recall", "noise/reseed", "freeze/toggle")


def parse_target(target: str) -> tuple[str, int | None]:
    """'noise' -> ('noise', None); 'cue/recall/3' -> ('cue/recall', 3). Raises ValueError on anything else.

    A target is what a MIDI control or an OSC alias drives: a parameter (SPECS) or a trigger.
    """
    if not isinstance(target, str):
        raise ValueError(f"a control target must be a string, got {type(target).__name__}")
    t = target.strip().lstrip("/")
    if t in SPECS or t in ("noise/reseed", "freeze/toggle", "cue/store", "cue/recall"):
        return t, None
    head, _, slot = t.rpartition("/")
    if head in ("cue/store", "cue/recall") and slot.isdigit() and int(slot) < N_CUES:
        return head, int(slot)
    known = ", ".join([*SPECS, "cue/store/N", "cue/recall/N", "noise/reseed", "freeze/toggle"])
    raise ValueError(f"unknown control {target!r} (known: {known}; N is 0..{N_CUES - 1})")


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
        # name -> time.perf_counter() of its last accepted write (for latency measurements)
        self._stamps: dict[str, float] = {}
        self.rejected = 0
        for k, v in initial.items():
            self.set(k.replace("_", "/", 1) if k.startswith(("noise_", "cue_")) else k, v)

    def set(self, name: str, value: object) -> bool:
        """Set one control by OSC name. Returns False (and counts) when the value is refused."""
        return self.update({name: value}) == 0

    def update(self, values: dict[str, object]) -> int:
        """Set several controls atomically (one snapshot sees all or none); returns how many were refused."""
        changes: dict[str, object] = {}
        refused = 0
        for name, value in values.items():
            try:
                v = coerce(name, value)
            except ValueError:
                refused += 1
                continue
            attr = _attr(name)
            changes[attr] = bool(v) if attr == "freeze" else v
        now = time.perf_counter()
        with self._lock:
            self.rejected += refused
            if changes:
                self._p = dataclasses.replace(self._p, **changes, version=self._p.version + 1)
                for attr in changes:
                    self._stamps[attr] = now
        return refused

    def changed_at(self, name: str) -> float | None:
        """time.perf_counter() when `name` last changed (None: never set since start)."""
        with self._lock:
            return self._stamps.get(_attr(name))

    def reseed(self) -> int:
        """Move to the next noise seed (a button's action); returns it."""
        with self._lock:
            seed = (self._p.noise_seed + 1) % (2**31)
            self._p = dataclasses.replace(self._p, noise_seed=seed, version=self._p.version + 1)
            self._stamps["noise_seed"] = time.perf_counter()
        return seed

    def toggle_freeze(self) -> bool:
        with self._lock:
            frozen = not self._p.freeze
            self._p = dataclasses.replace(self._p, freeze=frozen, version=self._p.version + 1)
            self._stamps["freeze"] = time.perf_counter()
        return frozen

    def store_cue(self, slot: object) -> bool:
        """Store the next frame's latent into cue `slot` (0..15). Out-of-range slots are refused, not clamped."""
        ok = not isinstance(slot, bool) and isinstance(slot, (int, float)) and math.isfinite(slot) \
            and float(slot).is_integer() and 0 <= slot < N_CUES
        with self._lock:
            if not ok:
                self.rejected += 1
                return False
            if int(slot) not in self._pending_cues:  # bounded: at most N_CUES pending, whatever the flood
                self._pending_cues.append(int(slot))
        return True

    def trigger(self, name: str, slot: int | None = None) -> bool:
        """Fire a one-shot action (TRIGGERS): cue/store N, cue/recall N, noise/reseed, freeze/toggle.
        Returns False (and counts) when it is refused (an unknown action, a cue slot out of range)."""
        if name == "cue/store":
            return self.store_cue(slot if slot is not None else 0)
        if name == "cue/recall":
            return self.set("cue/recall", slot if slot is not None else -1)
        if name == "noise/reseed":
            self.reseed()
            return True
        if name == "freeze/toggle":
            self.toggle_freeze()
            return True
        with self._lock:
            self.rejected += 1
        return False

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
