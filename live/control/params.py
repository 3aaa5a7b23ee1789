"""The one control vocabulary and the one parameter store, shared by OSC, MIDI, the web remote, presets and
the engine.

`CONTROLS` lists every control once, in the order a controller shows them: values the store holds
(`Spec`: a type, a range, a default) and buttons (`Trigger`: what a press sets). A row of buttons is one
entry whose name ends in /N (`cue/store/N`: cue/store/0 .. cue/store/15). Everything else derives from this
table, read when it is used: `SPECS` and `TRIGGERS` are views of it, `Params` (one frame's values) holds a
field for each Spec, and OSC addresses, MIDI maps, the web remote's list, presets, modulation targets and
the commands' options (live/control/options.py) follow. A new control is one entry here, or, from a plugin
or a drill, one `register_control` call, which checks it first.

Writers (OSC and MIDI threads, the web remote, preset loads) call `set`, `update`, `apply` or `press`; the
engine thread calls `snapshot()` once per frame and gets an immutable Params. Values are clamped to their
range; NaN and wrong types are refused (counted), never applied. The latest value wins. A reader that shows
the values (the web remote) polls `peek().version`, which every accepted write moves on.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

N_CUES = 16
ROW = "/N"  # the name of a row of buttons ends in this; each button is the name with its slot instead


@dataclass(frozen=True)
class Spec:
    """A value the store holds: its Python type, range (clamped to), default and one line of help.
    An int ranged 0..1 is a toggle: a controller shows it as on/off, a frame's Params holds it as a bool."""

    kind: type
    lo: float | None
    hi: float | None
    default: object
    help: str

    @property
    def type_name(self) -> str:
        """How a controller shows it: "float" (a fader), "int" (a number) or "toggle" (on/off)."""
        return "toggle" if self.kind is int and (self.lo, self.hi) == (0, 1) else self.kind.__name__

    @property
    def field_type(self) -> type:
        """What a frame's Params holds: a toggle as a bool (`if p.freeze`), anything else as its kind."""
        return bool if self.type_name == "toggle" else self.kind


@dataclass(frozen=True)
class Trigger:
    """A button: a press sets values computed from the current ones (`press(params, slot)` -> {name: value}).
    The pseudo-name "cue/store" in that result asks the next frame to store its latent in that slot.
    `slots` > 0 makes a row of buttons, one per slot."""

    help: str
    press: Callable[[Params, int | None], dict[str, object]]
    slots: int = 0


CONTROLS: dict[str, Spec | Trigger] = {
    "noise": Spec(float, 0.0, 1.0, 0.0, "latent noise amount: 0 decodes the mean, 1 the strongest dream"),
    "memory": Spec(float, 0.0, 1.0, 0.0, "what the film remembers: 0 what the model sees, 1 the film's frames "
                   "nearest to it"),
    "noise/max": Spec(float, 0.0, 4.0, 1.0, "sigma of the noise at amount 1 (in units of the encoder's sigma)"),
    "noise/drift": Spec(float, 0.0, 1.0, 0.1, "how fast the noise pattern evolves: 0 frozen, 1 new every frame"),
    "noise/seed": Spec(int, 0, 2**31 - 1, 0, "reseed the noise pattern"),
    "noise/reseed": Trigger("next noise pattern (seed + 1)",
                            lambda p, n: {"noise/seed": (p.noise_seed + 1) % 2**31}),
    "smooth": Spec(float, 0.0, 1.0, 0.0, "temporal smoothing of z (anti-flicker)"),
    "freeze": Spec(int, 0, 1, 0, "hold the current latent"),
    "freeze/toggle": Trigger("flip freeze", lambda p, n: {"freeze": int(not p.freeze)}),
    "cue/store/N": Trigger("store the current latent in cue N", lambda p, n: {"cue/store": n}, slots=N_CUES),
    "cue/recall": Spec(int, -1, N_CUES - 1, -1, "blend toward stored latent N (-1: none)"),
    "cue/recall/N": Trigger("blend toward cue N", lambda p, n: {"cue/recall": n}, slots=N_CUES),
    "cue/mix": Spec(float, 0.0, 1.0, 1.0, "how far to blend toward the recalled cue"),
    "mix": Spec(float, 0.0, 1.0, 1.0, "dry/wet: 0 the input, 1 the model's output"),
}


class _Entries(Mapping):
    """The CONTROLS entries of one class, read from the table at each use: an entry added there is here at once."""

    def __init__(self, cls: type) -> None:
        self._cls = cls

    def __getitem__(self, name: str):
        control = CONTROLS[name]
        if not isinstance(control, self._cls):
            raise KeyError(name)
        return control

    def __iter__(self) -> Iterator[str]:
        return (name for name, control in list(CONTROLS.items()) if isinstance(control, self._cls))

    def __len__(self) -> int:
        return sum(1 for _ in self)


SPECS: Mapping[str, Spec] = _Entries(Spec)
TRIGGERS: Mapping[str, Trigger] = _Entries(Trigger)
BUILT_IN = frozenset(CONTROLS)  # the table as shipped; register_control adds the rest
# what OSC answers itself at /preset, /model and /status (live/control/osc.py): never a control's name
OSC_COMMANDS = ("preset", "model", "status")
# words joined by '/': each control is an OSC address, a Params field and a --option named after it
_NAME = re.compile(r"[a-z][a-z0-9_]*(/[a-z][a-z0-9_]*)*")


def field_name(name: str) -> str:
    """A value's name -> its Params field: 'noise/drift' -> 'noise_drift'."""
    return name.replace("/", "_")


def control_name(key: str) -> str | None:
    """A value named either way ('noise/drift' or its field, 'noise_drift') -> its name; None when no Spec."""
    if key in SPECS:
        return key
    return next((name for name in SPECS if field_name(name) == key), None)


def register_control(name: str, spec: Spec) -> None:
    """Add a value control to CONTROLS, as a plugin (imported before the command: autoencoded.plugins) or
    a drill does. A bad one is a ValueError naming it, before it can break every controller that lists
    the table; a good one is a control everywhere, the commands' options included."""
    why = _refusal(name, spec)
    if why is not None:
        raise ValueError(f"control {name!r}: {why}")
    CONTROLS[name] = spec


def _refusal(name: object, spec: object) -> str | None:
    """What is wrong with a new control (its name, range, default, help); None when nothing."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        return "a name is lower-case words joined by '/' (grain, noise/drift)"
    field = field_name(name)
    if name in CONTROLS or name + ROW in CONTROLS or control_name(field) or hasattr(Params, field) \
            or name in OSC_COMMANDS:
        return f"the name (or its field {field}) is taken by a control, a Params attribute or an OSC command"
    if not isinstance(spec, Spec):
        return f"expected a Spec, got {type(spec).__name__}"
    if spec.kind not in (float, int):
        return f"its kind is float or int, not {getattr(spec.kind, '__name__', spec.kind)!r}"
    numbers = (spec.lo, spec.hi, spec.default)
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in numbers):
        return f"its range and default are finite numbers, got {spec.lo!r}..{spec.hi!r} and {spec.default!r}"
    if spec.kind is int and not all(isinstance(v, int) for v in numbers):
        return f"an int control's range and default are whole numbers, got {spec.lo}..{spec.hi} and {spec.default}"
    if not spec.lo < spec.hi:
        return f"its range {spec.lo}..{spec.hi} is empty"
    if not spec.lo <= spec.default <= spec.hi:
        return f"its default {spec.default} lies outside its range {spec.lo}..{spec.hi}"
    if not isinstance(spec.help, str) or not spec.help.strip() or not spec.help.isprintable():
        return "its help is one line of text"
    return None


def parse_target(target: object) -> tuple[str, int | None]:
    """A control as a MIDI map, an OSC alias or the web remote names it -> (its CONTROLS key, its slot).

    'noise' -> ('noise', None); '/cue/recall/3' -> ('cue/recall/N', 3); 'noise/reseed' -> ('noise/reseed',
    None); 'cue/store' -> ('cue/store/N', None): a row named without a slot takes the slot from the value it
    is sent (OSC `/cue/store 3`). Raises ValueError for anything else.
    """
    if not isinstance(target, str):
        raise ValueError(f"a control target must be a string, got {type(target).__name__}")
    t = target.strip().lstrip("/")
    if t in CONTROLS and not t.endswith(ROW):
        return t, None
    if t + ROW in TRIGGERS and t not in SPECS:
        return t + ROW, None
    head, _, slot = t.rpartition("/")
    row = TRIGGERS.get(head + ROW)
    if row is not None and slot.isascii() and slot.isdigit() and int(slot) < row.slots:
        return head + ROW, int(slot)
    raise ValueError(f"unknown control {target!r} (known: {', '.join(CONTROLS)}; N is 0..{N_CUES - 1})")


def target_name(key: str, slot: int | None) -> str:
    """The inverse of parse_target: ('cue/recall/N', 3) -> 'cue/recall/3'; ('cue/store/N', None) -> 'cue/store'."""
    if not key.endswith(ROW):
        return key
    return key[:-len(ROW)] if slot is None else f"{key[:-len(ROW)]}/{slot}"


class Params:
    """One frame's controls, immutable: a field for each Spec of CONTROLS, named by `field_name` (p.noise,
    p.noise_drift; a toggle holds a bool), made from the table, so a new control needs nothing here.
    Besides them: `cue_store`, the cue slots to store the current latent into (drained by the frame that
    sees them), and `version`, the store's count of writes. Fields not given take their Spec's default."""

    __slots__ = ("_fields", "cue_store", "version")

    def __init__(self, *, cue_store: tuple[int, ...] = (), version: int = 0, **fields: object) -> None:
        specs = {field_name(name): spec for name, spec in SPECS.items()}
        unknown = sorted(set(fields) - set(specs))
        if unknown:
            raise TypeError(f"Params has no field {', '.join(unknown)} (fields: {', '.join(specs)})")
        own = {f: spec.field_type(fields[f] if f in fields else spec.default) for f, spec in specs.items()}
        object.__setattr__(self, "_fields", own)
        object.__setattr__(self, "cue_store", tuple(cue_store))
        object.__setattr__(self, "version", version)

    def __getattr__(self, field: str) -> object:
        # the controls' fields (cue_store and version are slots); one the table gained after this Params
        # was made reads as its default
        fields = self._fields
        if field in fields:
            return fields[field]
        name = control_name(field)
        if name is None or field != field_name(name):
            raise AttributeError(f"Params has no field {field!r}")
        spec = SPECS[name]
        return spec.field_type(spec.default)

    def __setattr__(self, field: str, value: object) -> None:
        raise AttributeError("Params is immutable: make a new one with replace()")

    def replace(self, **changes: object) -> Params:
        """A copy with some fields changed (dataclasses.replace's contract)."""
        now = {field_name(name) for name in SPECS}  # a field the table has lost since is not kept
        kept = {f: v for f, v in self._fields.items() if f in now}
        return Params(**{**kept, "cue_store": self.cue_store, "version": self.version, **changes})

    def value(self, name: str) -> float | int:
        """One control's value by OSC name, as the controllers see it (a toggle as 0/1)."""
        return SPECS[name].kind(getattr(self, field_name(name)))

    def values(self) -> dict[str, float | int]:
        """The controls by OSC name (for /status replies and saving presets)."""
        return {name: self.value(name) for name in SPECS}

    def _key(self) -> tuple:
        return tuple(self._fields.items()), self.cue_store, self.version

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Params) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self._fields.items())
        return f"Params({fields}, cue_store={self.cue_store!r}, version={self.version})"


def coerce(name: str, value: object) -> float | int:
    """Validate and clamp one value for `name`; raises ValueError (bad type, NaN, unknown name)."""
    spec = SPECS.get(name)
    if spec is None:
        raise ValueError(f"unknown parameter {name!r}")
    if isinstance(value, bool):
        value = int(value)
    if not isinstance(value, (int, float)):
        raise ValueError(f"{name} expects a number, got {_kind(value)}")
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


def _kind(value: object) -> str:
    """What a refused value is, in words (it came from OSC, JSON or TOML)."""
    return {str: "a string", bytes: "bytes", list: "a list", dict: "an object",
            type(None): "null"}.get(type(value), type(value).__name__)


def _slot(key: str, value: object) -> int:
    """The slot a row's button is sent as a value (OSC `/cue/store 3`); ValueError unless a whole number in range."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) \
        and float(value).is_integer() and 0 <= value < TRIGGERS[key].slots
    if not ok:
        raise ValueError(f"{key[:-len(ROW)]} expects a slot 0..{TRIGGERS[key].slots - 1}, got {value!r}")
    return int(value)


def _pressed(name: str, value: object) -> bool:
    """A button's value: True/1/anything above 0.5 presses it, False/0 releases it (nothing happens)."""
    if isinstance(value, bool):
        return value
    if not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"{name} is a button: send true (press) or false (release)")
    return value > 0.5


class ControlRefused(ValueError):
    """A control's entry `ParamStore.apply` refused (nothing was applied): `name` says which, the message why."""

    def __init__(self, name: str, why: str) -> None:
        super().__init__(why)
        self.name = name


class ParamStore:
    """Thread-safe holder of the current Params. `snapshot()` never blocks for long (one lock, no I/O)."""

    def __init__(self, **initial: object) -> None:
        self._lock = threading.Lock()
        self._p = Params()
        self._pending_cues: list[int] = []
        # name -> time.perf_counter() of its last accepted write (for latency measurements)
        self._stamps: dict[str, float] = {}
        self.rejected = 0
        for k, v in initial.items():  # by name or by field: ParamStore(noise_drift=0.2)
            self.set(control_name(k) or k, v)

    # -- writing -----------------------------------------------------------------------------------
    def set(self, name: str, value: object) -> bool:
        """Set one value by OSC name. Returns False (and counts) when the value is refused."""
        return self.update({name: value}) == 0

    def update(self, values: Mapping[str, object]) -> int:
        """Set several values atomically (one snapshot sees all or none); refused entries are skipped and
        counted. Returns how many were refused."""
        changes: dict[str, object] = {}
        refused = 0
        for name, value in values.items():
            try:
                changes[name] = coerce(name, value)
            except ValueError:
                refused += 1
        if refused:
            with self._lock:
                self.rejected += refused
        if changes:
            self._commit(changes, ())
        return refused

    def press(self, target: str, slot: object = None) -> bool:
        """Fire a button: 'noise/reseed', 'cue/recall/3', or a row with its slot ('cue/store', 3).
        Returns False (and counts) when refused (an unknown button, a slot out of range)."""
        try:
            key, at = parse_target(target)
            if key not in TRIGGERS:
                raise ValueError(f"{target} is not a button")
            if at is None and TRIGGERS[key].slots:
                at = _slot(key, slot)
        except ValueError:
            with self._lock:
                self.rejected += 1
            return False
        self._commit({}, ((key, at),))
        return True

    def apply(self, values: Mapping[str, object]) -> dict[str, object]:
        """Set values and press buttons by name in one step, all or nothing: the web remote's POST.

        Values are validated and clamped as OSC's are; a button takes true/false (or a number: > 0.5
        presses), a row named without its slot takes the slot (`{"cue/store": 3}`). Raises ControlRefused (naming
        the entry) and changes nothing when any entry is refused. Returns the values that changed."""
        changes: dict[str, object] = {}
        presses: list[tuple[str, int | None]] = []
        try:
            for name, value in values.items():
                if name in SPECS:
                    try:
                        changes[name] = coerce(name, value)
                    except ValueError as exc:
                        raise ControlRefused(name, str(exc)) from None
                    continue
                try:
                    key, slot = parse_target(name)
                    if slot is None and TRIGGERS[key].slots:
                        presses.append((key, _slot(key, value)))
                    elif _pressed(name, value):
                        presses.append((key, slot))
                except ValueError as exc:
                    raise ControlRefused(name, str(exc)) from None
        except ControlRefused:
            with self._lock:
                self.rejected += 1
            raise
        if not changes and not presses:
            return {}
        return self._commit(changes, presses)

    def _commit(self, changes: dict[str, object], presses) -> dict[str, object]:
        """Apply coerced values, then presses (each sees the values before it), as one new Params."""
        now = time.perf_counter()
        with self._lock:
            old = self._p
            values = dict(changes)
            cues: list[int] = []
            for key, slot in presses:
                current = old.replace(**{field_name(k): v for k, v in values.items()}) if values else old
                for name, value in TRIGGERS[key].press(current, slot).items():
                    if name == "cue/store":
                        cues.append(int(value))
                    else:
                        values[name] = coerce(name, value)
            fields = {field_name(k): v for k, v in values.items()}
            if fields:
                self._p = old.replace(**fields, version=old.version + 1)
                for field in fields:
                    self._stamps[field] = now
            for slot in cues:
                if slot not in self._pending_cues:  # bounded: at most N_CUES pending, whatever the flood
                    self._pending_cues.append(slot)
            return {k: self._p.value(k) for k in values if self._p.value(k) != old.value(k)}

    # -- reading -----------------------------------------------------------------------------------
    def describe(self) -> dict[str, dict[str, object]]:
        """Every control a controller can show, in CONTROLS order, by the name it is set by: values with
        {"type": "float"|"int"|"toggle", "value", "min", "max", "default", "help"}, each button of a row with
        {"type": "trigger", "help"}."""
        current = self.peek().values()
        out: dict[str, dict[str, object]] = {}
        for key, control in CONTROLS.items():
            if isinstance(control, Spec):
                out[key] = {"type": control.type_name, "value": current[key], "min": control.lo,
                            "max": control.hi, "default": control.default, "help": control.help}
            elif control.slots:
                for n in range(control.slots):
                    out[target_name(key, n)] = {"type": "trigger", "help": control.help.replace(" N", f" {n}")}
            else:
                out[key] = {"type": "trigger", "help": control.help}
        return out

    def changed_at(self, name: str) -> float | None:
        """time.perf_counter() when `name` last changed (None: never set since start)."""
        with self._lock:
            return self._stamps.get(field_name(name))

    def snapshot(self) -> Params:
        """The current Params for one frame; drains the cue stores asked for since the last snapshot."""
        with self._lock:
            p = self._p
            if self._pending_cues:
                p = p.replace(cue_store=tuple(self._pending_cues))
                self._pending_cues.clear()
            return p

    def peek(self) -> Params:
        with self._lock:
            return self._p
