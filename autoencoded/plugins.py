"""Plugins: modules that add a sink, a backend (or any other registry entry) by being imported.

A plugin is an ordinary Python module whose import calls a registry's `register_*` function (for example
`autoencoded.live.io.sinks.register_sink` or `autoencoded.live.engines.backends.register_backend`). The
command line imports every plugin before it imports a command, so a command's options, `--help` and error
messages, all built from the registries when the command is imported, include what the plugins added.

Two ways to name a plugin, both read here and nowhere else:
- an installed distribution declares it in the entry point group `autoencoded.plugins`
  (pyproject: `[project.entry-points."autoencoded.plugins"] my_sink = "my_package.my_sink"`);
- the environment variable AUTOENCODED_PLUGINS names modules on sys.path, separated by commas
  (`AUTOENCODED_PLUGINS=my_sink,my_backend autoencoded live ...`).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TypeVar

from autoencoded.errors import UserError, one_line

ENTRY_POINT_GROUP = "autoencoded.plugins"
ENV_VAR = "AUTOENCODED_PLUGINS"

_loaded: set[str] = set()  # what this process imported already (a plugin's registrations run once)
_loading: list[str] = []  # the plugin being imported now: what the registries record as an entry's origin

T = TypeVar("T")


def loading() -> str | None:
    """The plugin whose import is running (a registry's `register_*` records it), None outside one."""
    return _loading[-1] if _loading else None


def made_by(origin: str | None, what: str, make: Callable[[], T], kind: type) -> T:
    """What a registry entry's factory makes (`make()`). A built-in's (`origin` None) comes as it is: its
    failure is our bug and raises. A plugin's failure, or something that is not a `kind`, is one UserError
    line naming the plugin, not an internal error of ours: SystemExit and other BaseExceptions too (a plugin
    has no say over how the command ends). KeyboardInterrupt passes: here, while the command runs, it is
    most likely the user's Ctrl-C."""
    if origin is None:
        return make()
    try:
        made = make()
    except (UserError, KeyboardInterrupt):
        raise
    except BaseException as exc:  # noqa: BLE001 - the plugin's own fault, said in one line
        raise UserError(f"plugin {origin}: {what} failed ({one_line(exc, typed=True)})") from None
    if not isinstance(made, kind):
        raise UserError(f"plugin {origin}: {what} returned {type(made).__name__}, not an instance of "
                        f"{kind.__module__}.{kind.__name__}")
    return made


def load_plugins() -> None:
    """Import every plugin named by the entry point group and by AUTOENCODED_PLUGINS, each once. A plugin
    that fails to import, whatever it raises (SystemExit, KeyboardInterrupt and any other BaseException
    included: an import takes an instant, so it is the module's, not a Ctrl-C), is one UserError line
    naming it and where it was named."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        _load(f"entry point {ep.name} = {ep.value}", ep.load)
    for name in (n.strip() for n in os.environ.get(ENV_VAR, "").split(",")):
        if name:
            _load(f"{ENV_VAR} module {name}", lambda name=name: importlib.import_module(name))


def _load(what: str, load) -> None:
    if what in _loaded:
        return
    _loading.append(what)
    try:
        load()
    except BaseException as exc:  # noqa: BLE001 - a plugin's own fault, said in one line
        raise UserError(f"plugin {what}: cannot be loaded ({one_line(exc, typed=True)})") from None
    finally:
        _loading.pop()
    _loaded.add(what)
