"""Write docs/controls.md from the tables the program plays by, so the page cannot drift from them:
CONTROLS (live/control/params.py) for the controls, OSC's routes (live/control/osc.py base_routes) for the
addresses, the web app's routes (live/web/app.py build_app, described by that module's docstring) and the
commands' control options (every ControlsCommand of the command line).

    python docs/make_controls.py            # rewrite docs/controls.md
    python docs/make_controls.py --check    # exit 1 when docs/controls.md is not what this writes

tests/test_docs.py runs the check. A control, OSC command or web route without the words this page needs
(its help, a line in app.py's docstring) is an error here rather than a blank cell.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
import types
from pathlib import Path

PAGE = Path(__file__).resolve().parent / "controls.md"

# what OSC answers itself (OSC_COMMANDS): its arguments and what it does; a new command needs a row here
OSC_COMMAND_WORDS = {
    "preset": ("string", "switch to a preset by name (its values applied in one step)"),
    "model": ("string", "load a model in the background and swap it in between two frames; one load at a "
                        "time, the latest request wins; a failed load keeps the current one"),
    "status": ("none", "replies `/status/<stat>` (fps, latency, model...), `/status/osc/<counter>`, and every "
                       "control at its address, to the sender or `--osc-feedback HOST:PORT`"),
}
# what each kind of OSC route takes (live/control/osc.py HANDLERS)
OSC_ARGS = {"float": "float", "int": "int", "toggle": "int 0/1, float, or T/F",
            "button": "none, or float > 0.5", "row": "int (the slot)"}


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _number(v: object) -> str:
    if isinstance(v, int) and not isinstance(v, bool) and v >= 2**16:
        exp = v.bit_length() - 1
        if v == 2**exp:
            return f"2^{exp}"
        if v == 2 ** (exp + 1) - 1:
            return f"2^{exp + 1}-1"
    return f"{v:g}" if isinstance(v, float) else str(v)


def control_options() -> dict[str, list[str]]:
    """control name -> ['`live --noise`', ...]: the options every command with control options makes."""
    from autoencoded.cli import COMMANDS
    from autoencoded.live.control.options import ControlsCommand, control_option

    out: dict[str, list[str]] = {}
    for name, (module, attr) in COMMANDS.items():
        command = getattr(importlib.import_module(module), attr)
        if isinstance(command, ControlsCommand):
            for control in command.control_names():
                flag = control_option(control, command.flags.get(control)).opts[0]
                out.setdefault(control, []).append(f"`{name} {flag}`")
    return out


def _constants(text: str, *modules: types.ModuleType) -> str:
    """A docstring's constant names (MAX_FPS) as their values, so the page says the number the code uses."""
    def value(m: re.Match) -> str:
        for module in modules:
            v = getattr(module, m.group(0), None)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                return _number(v)
        return m.group(0)
    return re.sub(r"\b[A-Z][A-Z0-9]*_[A-Z0-9_]+\b", value, text)


def web_routes() -> list[tuple[str, str, str]]:
    """(methods, path, what) for every route of the web app, described by app.py's docstring."""
    from starlette.routing import Mount, WebSocketRoute

    from autoencoded.live.web import app as web_app
    from autoencoded.live.web import preview

    described: dict[tuple[str, str], str] = {}
    current = None
    for line in (web_app.__doc__ or "").splitlines():
        m = re.match(r"\s{4}(GET|POST|WS|PUT|DELETE)\s+(/\S*)\s+(.*)", line)
        if m:
            current = (m.group(1), m.group(2))
            described[current] = m.group(3).strip()
        elif current and re.match(r"\s{8,}\S", line):
            described[current] += " " + line.strip()
        else:
            current = None
    stub = types.SimpleNamespace(**{name: (lambda *a, **k: None) for name in dir(web_app.Remote)
                                    if not name.startswith("__")})
    routes: dict[str, list[str]] = {}
    for route in web_app.build_app(stub).routes:
        if isinstance(route, Mount):
            continue  # the page's own files (/static)
        methods = ["WS"] if isinstance(route, WebSocketRoute) else sorted(route.methods - {"HEAD"}) or ["GET"]
        routes.setdefault(route.path, []).extend(m for m in methods if m not in routes.get(route.path, []))
    rows = []
    for path, methods in routes.items():
        words = [f"{m}: {described[m, path]}" if len(methods) > 1 else described[m, path]
                 for m in methods if (m, path) in described]
        if not words:
            raise SystemExit(f"live/web/app.py's docstring does not describe the route {path}")
        rows.append(("/".join(methods), path, _constants("; ".join(words), web_app, preview)))
    return rows


def render() -> str:
    from autoencoded.live.control.modulation import SIGNALS, targets
    from autoencoded.live.control.osc import DEFAULT_PORT, OSC_COMMANDS, PATTERN_KINDS, Route, base_routes
    from autoencoded.live.control.params import CONTROLS, ROW, Spec
    from autoencoded.live.stage import SIGNAL_FEEDBACK_S
    from autoencoded.live.web.server import DEFAULT as WEB_DEFAULT

    options = control_options()
    modulated = set(targets())
    lines = [
        "# Controls",
        "",
        "<!-- Generated by `python docs/make_controls.py` from CONTROLS (live/control/params.py), OSC's routes,",
        "     the web app's routes and the commands' options. Do not edit: tests/test_docs.py fails when this",
        "     page is not what the script writes. -->",
        "",
        "Every control is one entry of `CONTROLS` (live/control/params.py). OSC, MIDI learn, presets, modulation,",
        "the web remote and the commands' options all take it from there, so this page lists what each of them",
        "plays. Values out of range are clamped; NaN and wrong types are refused and counted.",
        "",
        "## The controls",
        "",
        "| control | type | range | default | OSC | option | modulated by `--mod` | what it does |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, control in CONTROLS.items():
        if isinstance(control, Spec):
            kind = control.type_name
            span = f"{_number(control.lo)}..{_number(control.hi)}"
            default = _number(control.default)
            osc = f"`/{key}`"
        else:
            kind, span, default = "button", "", ""
            if control.slots:
                head = key[:-len(ROW)]
                span = f"N = 0..{control.slots - 1}"
                osc = f"`/{key}`, `/{head} N`"
            else:
                osc = f"`/{key}`"
        lines.append(f"| `{key}` | {kind} | {span} | {default} | {osc} | {', '.join(options.get(key, []))} | "
                     f"{'yes' if key in modulated else ''} | {_cell(control.help)} |")

    lines += [
        "",
        "## OSC addresses",
        "",
        f"`autoencoded live` listens on `127.0.0.1:{DEFAULT_PORT}` (`--osc-port`, `--osc-host`, `--osc-allow`).",
        "Most controls take normalised 0..1 floats, as Resolume and TouchOSC send them; each takes the range",
        "given. Address patterns (`/cue/store/[0-3]`, `/no*`) reach "
        + ("the controls, never the commands below them." if set(PATTERN_KINDS) == {"value", "button", "row"}
           else f"the routes of kind {', '.join(PATTERN_KINDS)}."),
        "",
        "| OSC address | args | range | what it does |",
        "|---|---|---|---|",
    ]
    seen: set[tuple[str, str]] = set()
    for address, route in base_routes().items():
        if route.kind in OSC_COMMANDS:
            continue
        control = CONTROLS[route.key]
        if route.kind == "button" and route.slot is not None:
            address = address.rsplit("/", 1)[0] + "/N"
            if (address, "button") in seen:
                continue
        seen.add((address, route.kind))
        if route.kind == "value":
            args, span = OSC_ARGS[control.type_name], f"{_number(control.lo)}..{_number(control.hi)}"
        elif route.kind == "row":
            args, span = OSC_ARGS["row"], f"0..{control.slots - 1}"
        else:
            args, span = OSC_ARGS["button"], f"N = 0..{control.slots - 1}" if control.slots else ""
        lines.append(f"| `{address}` | {args} | {span} | {_cell(control.help)} |")
    for command in OSC_COMMANDS:
        if command not in OSC_COMMAND_WORDS:
            raise SystemExit(f"docs/make_controls.py: OSC_COMMAND_WORDS has no row for /{command}")
        assert base_routes()[f"/{command}"] == Route(command)
        args, what = OSC_COMMAND_WORDS[command]
        lines.append(f"| `/{command}` | {args} | | {_cell(what)} |")
    lines += [
        "",
        "With `--osc-feedback HOST:PORT` the modulation signals go out as OSC floats 0..1, "
        f"{round(1 / SIGNAL_FEEDBACK_S)} times a second: "
        + ", ".join(f"`/{s.replace('.', '/')}`" for s in SIGNALS) + ".",
        "",
        "## Web routes",
        "",
        f"`autoencoded live` serves the remote on `{WEB_DEFAULT}` (`--web`; a token off this machine).",
        "`POST /api/v1/params` and the WebSocket's `{\"set\": {...}}` take the controls above by name: a value",
        "as a number, a button as `true`, a row's button as `\"cue/recall/3\": true` or `\"cue/store\": 3`.",
        "",
        "| route | methods | what it does |",
        "|---|---|---|",
    ]
    for methods, path, what in web_routes():
        lines.append(f"| `{path}` | {methods} | {_cell(what)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 when the page is stale, writing nothing")
    args = ap.parse_args(argv)
    text = render()
    if args.check:
        if not PAGE.exists() or PAGE.read_text() != text:
            print(f"{PAGE} is stale: run python docs/make_controls.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
