"""The controls as command-line options (`live --noise`, `render --seed`, a plugin's `--grain`), made from
CONTROLS (live/control/params.py) when the command runs: each option's range, default and help are its
Spec's, and a control registered after the command was imported (a plugin's, a drill's) is one all the same.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import click
from click.core import ParameterSource

from autoencoded.errors import UserError
from autoencoded.live.control.params import BUILT_IN, SPECS, field_name
from autoencoded.numbers import Finite


def control_option(name: str, flag: str | None = None) -> click.Option:
    """One control as an option: `--noise-drift` for noise/drift unless `flag` names it otherwise."""
    spec = SPECS[name]
    kind = Finite(spec.lo, spec.hi) if spec.kind is float else click.IntRange(spec.lo, spec.hi)
    return click.Option([flag or "--" + field_name(name).replace("_", "-"), _param(name)], type=kind,
                        default=spec.default, show_default=True, help=f"{spec.help[:1].upper()}{spec.help[1:]}.")


def _param(name: str) -> str:
    return "control_" + field_name(name)  # apart from the command's own parameters' names


class ControlsCommand(click.Command):
    """A command with control options: the built-in controls it names (`controls`, `flags` naming any option
    otherwise than after its control) and every control register_control added, after its option `after`.
    The callback gets `controls`: {control name: value} of those given on the command line; the others
    are their Spec's default, as a new ParamStore has them."""

    def __init__(self, *args, controls: Sequence[str], after: str, flags: Mapping[str, str] | None = None,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.controls, self.after, self.flags = tuple(controls), after, dict(flags or {})

    def control_names(self) -> list[str]:
        return [*self.controls, *(name for name in SPECS if name not in BUILT_IN)]

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        params = super().get_params(ctx)
        taken = {opt for p in params for opt in (*p.opts, *p.secondary_opts)}
        names = self.control_names()
        options = [control_option(name, self.flags.get(name)) for name in names]
        for name, option in zip(names, options, strict=True):
            if option.opts[0] in taken:  # a plugin's control named like one of the command's options
                raise UserError(f"control {name}: {option.opts[0]} is an option of `{self.name}` already; "
                                "register the control under another name")
        at = [p.name for p in params].index(self.after) + 1
        return [*params[:at], *options, *params[at:]]

    def invoke(self, ctx: click.Context):
        given = {}
        for name in self.control_names():
            value = ctx.params.pop(_param(name))
            if ctx.get_parameter_source(_param(name)) is ParameterSource.COMMANDLINE:
                given[name] = value
        ctx.params["controls"] = given
        return super().invoke(ctx)
