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
from importlib.metadata import entry_points

from autoencoded.errors import UserError, one_line

ENTRY_POINT_GROUP = "autoencoded.plugins"
ENV_VAR = "AUTOENCODED_PLUGINS"

_loaded: set[str] = set()  # what this process imported already (a plugin's registrations run once)


def load_plugins() -> None:
    """Import every plugin named by the entry point group and by AUTOENCODED_PLUGINS, each once. A plugin
    that fails to import is one UserError line naming it and where it was named."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        _load(f"entry point {ep.name} = {ep.value}", ep.load)
    for name in (n.strip() for n in os.environ.get(ENV_VAR, "").split(",")):
        if name:
            _load(f"{ENV_VAR} module {name}", lambda name=name: importlib.import_module(name))


def _load(what: str, load) -> None:
    if what in _loaded:
        return
    try:
        load()
    except Exception as exc:  # noqa: BLE001 - a plugin's own fault, said in one line
        raise UserError(f"plugin {what}: cannot be loaded ({one_line(exc, typed=True)})") from None
    _loaded.add(what)
