"""Presets: TOML files holding parameter values, OSC address aliases, MIDI CC maps, and source/sink/model.

    description = "one line"
    [params]                      # any control from autoencoded.live.control.params.SPECS ("noise/drift" or noise_drift)
    noise = 0.2
    [osc.aliases]                 # other layouts' addresses -> a control or trigger
    "/1/fader1" = "noise"
    [midi]
    device = "nanoKONTROL2"       # a substring of the input port's name, or "auto"
    channel = 1                   # 1..16; leave out to listen on every channel
    [midi.cc]                     # CC number -> control or trigger (cue/recall/3, noise/reseed, ...)
    0 = "noise"
    [[mod]]                       # modulation routes (autoencoded.live.control.modulation), any number
    signal = "audio.bass"         # audio.level/bass/mid/high/onset, beat.phase/pulse
    target = "noise"              # a continuous control
    amount = 0.8                  # -1..1 of the control's range, on top of its base value
    attack = 0.01                 # seconds (optional)
    release = 0.2                 # seconds (optional)
    [live]
    model = "demo"                # what --model / --input / --output would say
    input = "demo"
    output = "window"             # or a list of outputs

Every section is optional. A preset sets what it lists and leaves the rest as it is. Files are validated
completely at load: a mistake is a UserError naming the file and the key. Unknown keys are errors.

Lookup by NAME searches, in order: $AUTOENCODED_PRESETS, the user folder (~/.config/autoencoded/presets),
and the shipped ones (the repository's presets/ folder, installed as the package autoencoded.presets and
read with importlib.resources, so a source checkout and `pip install autoencoded` see the same files).
"""

from __future__ import annotations

import importlib.resources
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

from autoencoded.documents import parse_toml
from autoencoded.errors import UserError
from autoencoded.live.control.modulation import ModRoute, make_route
from autoencoded.live.control.params import (
    OSC_COMMANDS,
    ROW,
    SPECS,
    TRIGGERS,
    ParamStore,
    coerce,
    control_name,
    parse_target,
    target_name,
)
from autoencoded.text import printable

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SHIPPED_DIR = Path(str(importlib.resources.files("autoencoded.presets")))
TOP_KEYS = ("description", "params", "osc", "midi", "mod", "live")
MOD_KEYS = ("signal", "target", "amount", "attack", "release")
LIVE_KEYS = ("model", "input", "output")


@dataclass
class Preset:
    name: str
    path: Path | None = None
    description: str = ""
    params: dict[str, float | int] = field(default_factory=dict)
    osc_aliases: dict[str, str] | None = None  # None: the file has no [osc] section (keep the current map)
    midi_device: str | None = None
    midi_channel: int | None = None  # 1..16, None = any
    midi_cc: dict[int, str] | None = None  # None: the file has no [midi] section
    live: dict[str, str | list[str]] = field(default_factory=dict)
    mods: list[ModRoute] | None = None  # None: the file has no [[mod]] (keep the current routes)


def user_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "autoencoded" / "presets"


def search_dirs() -> list[Path]:
    dirs = [Path(p) for p in os.environ.get("AUTOENCODED_PRESETS", "").split(os.pathsep) if p]
    dirs += [user_dir(), SHIPPED_DIR]
    return dirs


def list_presets() -> list[str]:
    names: set[str] = set()
    for d in search_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.toml") if NAME_RE.match(p.stem))
    return sorted(names)


def find_preset(ref: str, allow_path: bool = True) -> Path:
    """A preset NAME (searched in search_dirs) or, when allow_path, a FILE path. Raises UserError.

    Over OSC only names are allowed (allow_path=False): a stage network never picks files by path.
    """
    if not isinstance(ref, str) or not ref.strip():
        raise UserError("a preset needs a name or a .toml file")
    ref = ref.strip()
    has_dir = "/" in ref or os.sep in ref
    if allow_path and (has_dir or ref.endswith(".toml")):
        path = Path(ref).expanduser()
        if path.is_file():
            return path
        if has_dir:
            raise UserError(f"preset file {ref} does not exist")
    name = ref[:-5] if ref.endswith(".toml") else ref
    if not NAME_RE.match(name):
        raise UserError(f"bad preset name {ref!r} (letters, digits, '-', '_' and '.' only)")
    for d in search_dirs():
        path = d / f"{name}.toml"
        if path.is_file():
            return path
    raise UserError(f"no preset named {name!r} (available: {', '.join(list_presets()) or 'none'})")


def load_preset(ref: str | Path, allow_path: bool = True) -> Preset:
    path = ref if isinstance(ref, Path) else find_preset(ref, allow_path=allow_path)
    try:
        data = parse_toml(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"cannot read preset {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    except ValueError as exc:
        raise UserError(f"{path}: not valid TOML: {exc}") from None
    return parse_preset(data, path.stem, path)


def _fail(path: Path | str, key: str, msg: str) -> UserError:
    return UserError(f"{path}: {key}: {msg}")


def _table(data: dict, key: str, path, allowed: tuple[str, ...] | None = None) -> dict:
    value = data.get(key.rsplit(".", 1)[-1], {})
    if not isinstance(value, dict):
        raise _fail(path, key, f"must be a table ([{key}]), got {type(value).__name__}")
    if allowed is not None:
        for k in value:
            if k not in allowed:
                raise _fail(path, f"{key}.{k}", f"unknown key (known: {', '.join(allowed)})")
    return value


def _params(data: dict, path) -> dict[str, float | int]:
    out: dict[str, float | int] = {}
    for key, value in _table(data, "params", path).items():
        name = control_name(key)
        where = f"params.{key}"
        if name is None:
            raise _fail(path, where, f"unknown parameter (known: {', '.join(SPECS)})")
        if isinstance(value, bool):
            value = int(value)
        if not isinstance(value, (int, float)) or (isinstance(value, float) and not math.isfinite(value)):
            raise _fail(path, where, f"expected a finite number, got {value!r}")
        spec = SPECS[name]
        if spec.kind is int and isinstance(value, float) and not value.is_integer():
            raise _fail(path, where, f"expected a whole number, got {value!r}")
        if (spec.lo is not None and value < spec.lo) or (spec.hi is not None and value > spec.hi):
            raise _fail(path, where, f"{value!r} is outside {spec.lo}..{spec.hi}")
        out[name] = coerce(name, value)
    return out


def _target(value: object, path, where: str, row_ok: bool = True) -> str:
    """A control target as the preset names it, checked against the vocabulary; a row of buttons without
    its slot ('cue/store') only where the slot can come with the value (an OSC alias, not a MIDI control)."""
    try:
        key, slot = parse_target(value)  # type: ignore[arg-type]
    except ValueError as exc:
        raise _fail(path, where, printable(exc)) from None
    if key.endswith(ROW) and slot is None and not row_ok:
        raise _fail(path, where, f"name the button's slot: {key[:-len(ROW)]}/0..{TRIGGERS[key].slots - 1}")
    return target_name(key, slot)


def _osc(data: dict, path) -> dict[str, str] | None:
    if "osc" not in data:
        return None
    osc = _table(data, "osc", path, ("aliases",))
    aliases: dict[str, str] = {}
    for address, target in _table(osc, "osc.aliases", path).items():
        where = f"osc.aliases.{address!r}"
        if not address.startswith("/") or len(address) < 2 or any(c in address for c in " #*?[]{},"):
            raise _fail(path, where, "an OSC address starts with '/' and has no spaces or #*?[]{},")
        if address[1:] in OSC_COMMANDS or control_name(address[1:]) == address[1:]:
            raise _fail(path, where, "takes over a built-in address")
        aliases[address] = _target(target, path, where)
    return aliases


def _midi(data: dict, path) -> tuple[str | None, int | None, dict[int, str] | None]:
    if "midi" not in data:
        return None, None, None
    midi = _table(data, "midi", path, ("device", "channel", "cc"))
    device = midi.get("device")
    if device is not None and (not isinstance(device, str) or not device.strip()):
        raise _fail(path, "midi.device", "expected a port name (or part of one) or \"auto\"")
    channel = midi.get("channel")
    if channel is not None and (isinstance(channel, bool) or not isinstance(channel, int)
                                or not 1 <= channel <= 16):
        raise _fail(path, "midi.channel", f"expected 1..16, got {channel!r}")
    cc: dict[int, str] = {}
    for key, target in _table(midi, "midi.cc", path).items():
        where = f"midi.cc.{printable(key)}"
        if not (key.isascii() and key.isdigit()) or not 0 <= int(key) <= 127:
            raise _fail(path, where, "a CC number is 0..127")
        cc[int(key)] = _target(target, path, where, row_ok=False)
    return device, channel, cc


def _mods(data: dict, path) -> list[ModRoute] | None:
    if "mod" not in data:
        return None
    tables = data["mod"]
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise _fail(path, "mod", "expected [[mod]] tables (signal, target, amount[, attack, release])")
    routes = []
    for i, t in enumerate(tables):
        where = f"mod[{i}]"
        for k in t:
            if k not in MOD_KEYS:
                raise _fail(path, f"{where}.{k}", f"unknown key (known: {', '.join(MOD_KEYS)})")
        missing = [k for k in MOD_KEYS[:3] if k not in t]
        if missing:
            raise _fail(path, where, f"missing {', '.join(missing)}")
        try:
            routes.append(make_route(**t))
        except ValueError as exc:
            raise _fail(path, where, str(exc)) from None
    return routes


def _live(data: dict, path) -> dict[str, str | list[str]]:
    live = _table(data, "live", path, LIVE_KEYS)
    for key, value in live.items():
        ok = isinstance(value, str) and value.strip()
        if key == "output" and isinstance(value, list):
            ok = bool(value) and all(isinstance(v, str) and v.strip() for v in value)
        if not ok:
            raise _fail(path, f"live.{key}", "expected a non-empty string" + (" or a list of them"
                                                                              if key == "output" else ""))
    return dict(live)


def parse_preset(data: dict, name: str, path: Path | str | None = None) -> Preset:
    """Validate a parsed TOML document completely; UserError names the file and the key."""
    where = path if path is not None else f"preset {name}"
    for key in data:
        if key not in TOP_KEYS:
            raise _fail(where, key, f"unknown key (known: {', '.join(TOP_KEYS)})")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise _fail(where, "description", "expected a string")
    device, channel, cc = _midi(data, where)
    return Preset(name=name, path=Path(path) if path is not None else None, description=description,
                  params=_params(data, where), osc_aliases=_osc(data, where), midi_device=device,
                  midi_channel=channel, midi_cc=cc, live=_live(data, where), mods=_mods(data, where))


def preset_to_toml(preset: Preset) -> dict:
    doc: dict = {}
    if preset.description:
        doc["description"] = preset.description
    if preset.params:
        doc["params"] = dict(preset.params)
    if preset.osc_aliases is not None:
        doc["osc"] = {"aliases": dict(preset.osc_aliases)}
    if preset.midi_cc is not None or preset.midi_device or preset.midi_channel:
        midi: dict = {}
        if preset.midi_device:
            midi["device"] = preset.midi_device
        if preset.midi_channel:
            midi["channel"] = preset.midi_channel
        midi["cc"] = {str(k): v for k, v in sorted((preset.midi_cc or {}).items())}
        doc["midi"] = midi
    if preset.mods is not None:
        doc["mod"] = [{"signal": r.signal, "target": r.target, "amount": r.amount, "attack": r.attack,
                       "release": r.release} for r in preset.mods]
    if preset.live:
        doc["live"] = dict(preset.live)
    return doc


def write_preset(path: Path | str, preset: Preset) -> Path:
    """Write atomically (temp file + rename): a crash never leaves half a preset behind."""
    path = Path(path)
    text = tomli_w.dumps(preset_to_toml(preset))
    parse_preset(parse_toml(text), preset.name, path)  # never write what we could not read back
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise UserError(f"cannot write preset {path}: {exc.strerror or exc}") from None
    return path


def save_preset(path: Path | str, store: ParamStore, *, base: Preset | None = None,
                description: str | None = None) -> Path:
    """Save the store's current values as a preset (keeping `base`'s OSC/MIDI maps and live settings)."""
    path = Path(path)
    values = store.peek().values()
    preset = Preset(name=path.stem, path=path,
                    description=description if description is not None else (base.description if base else ""),
                    params=values,
                    osc_aliases=base.osc_aliases if base else None,
                    midi_device=base.midi_device if base else None,
                    midi_channel=base.midi_channel if base else None,
                    midi_cc=base.midi_cc if base else None,
                    live=dict(base.live) if base else {},
                    mods=list(base.mods) if base and base.mods is not None else None)
    return write_preset(path, preset)


def writable_path(preset: Preset) -> Path:
    """Where changes to `preset` (MIDI learn) are saved: its own file when it is the user's, else a copy
    with the same name in the user folder (shipped presets are never modified)."""
    shipped = (SHIPPED_DIR.resolve(),)
    if preset.path is not None and preset.path.resolve().parent not in shipped:
        return preset.path
    return user_dir() / f"{preset.name}.toml"


def bind_cc(preset: Preset, cc: int, target: str) -> Path:
    """Add `cc -> target` to the preset's MIDI map (one control per CC, one CC per parameter) and save it."""
    target = _target(target, preset.path or preset.name, "midi-learn", row_ok=False)
    if not 0 <= int(cc) <= 127:
        raise UserError(f"midi-learn: CC {cc} is outside 0..127")
    cc_map = {k: v for k, v in (preset.midi_cc or {}).items() if v != target}
    cc_map[int(cc)] = target
    preset.midi_cc = cc_map
    path = writable_path(preset)
    write_preset(path, preset)
    preset.path = path
    return path
