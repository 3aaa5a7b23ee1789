"""Numbers from the command line, for every command's float option: one click type, finite by construction.

click's FLOAT takes 'nan', 'inf' and '-inf' as Python's float() does, and its FloatRange lets NaN through
(every comparison with NaN is false): `live --duration nan` ran for ever and `memory --max-pack-mb nan` was
an internal error. `Finite` refuses them, and numbers outside its range, as one line naming the option and
exit 2 (a UserError, as autoencoded.sizes does, rather than click's usage error, which prints the usage).
"""

from __future__ import annotations

import math

import click

from autoencoded.errors import UserError
from autoencoded.text import printable


class Finite(click.FloatRange):
    """A click option type: a finite float, within FloatRange's bounds when given (help shows the range)."""

    name = "float"

    def convert(self, value, param, ctx) -> float:
        option = param.opts[0] if param is not None and param.opts else "value"
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise UserError(f"{option} {printable(value)}: expected a number") from None
        if not math.isfinite(number):
            raise UserError(f"{option} {printable(value)}: must be a finite number")
        try:
            return super().convert(number, param, ctx)
        except click.BadParameter:
            raise UserError(f"{option} {printable(value)}: must be {self.bounds()}") from None

    def bounds(self) -> str:
        """The range in words: "between 0 and 1", "more than 0", "at least 0 and less than 1"."""
        lo, hi = self.min, self.max
        if lo is not None and hi is not None and not (self.min_open or self.max_open):
            return f"between {lo:g} and {hi:g}"
        words = [] if lo is None else [f"more than {lo:g}" if self.min_open else f"at least {lo:g}"]
        words += [] if hi is None else [f"less than {hi:g}" if self.max_open else f"at most {hi:g}"]
        return " and ".join(words)

    def _describe_range(self) -> str:
        # click writes an unbounded range as "x<=None" in --help
        return "" if self.min is None and self.max is None else super()._describe_range()


FINITE = Finite()  # any finite number
