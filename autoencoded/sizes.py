"""Picture sizes written WIDTHxHEIGHT, for every command's size option: one parser, one click type.

A bad size is the user's error, one line and exit 2, naming the option: `Size.convert` raises UserError
(which the CLI prints as one line) rather than click's usage error (which prints the whole usage).
"""

from __future__ import annotations

import click

from autoencoded.errors import UserError

MAX_SIZE = (7680, 4320)  # 8K UHD: larger is a typo, and would ask for gigabytes per frame
MAX_Z_DIM = 16384  # a latent's length (the learned code and the layout): the film's model has 200, lite 9472 (256 and
# its 128x72 layout); more is a typo (or a hostile file) that would ask for gigabytes (train --z-dim, and
# every model pack, are held to it)


def parse_size(text: str, option: str = "--size", multiple: int = 1, minimum: int = 1,
               maximum: tuple[int, int] = MAX_SIZE) -> tuple[int, int]:
    """'1280x720' -> (1280, 720). Both sides multiples of `multiple` (2 for H.264's 4:2:0, 16 for the
    models, which halve them four times), between `minimum` and `maximum`."""
    try:
        w, h = (int(p) for p in str(text).lower().replace(" ", "").split("x"))
    except ValueError:
        raise UserError(f"{option} {text!r}: expected WIDTHxHEIGHT, e.g. {_example(multiple)}") from None
    # the bounds first: 99999x99999 is too big, and saying "must be even" would send the user the wrong way
    if not (minimum <= w <= maximum[0] and minimum <= h <= maximum[1]):
        raise UserError(f"{option} {text!r}: sides must be between {minimum}x{minimum} and "
                        f"{maximum[0]}x{maximum[1]}")
    if w % multiple or h % multiple:
        kind = "even" if multiple == 2 else f"multiples of {multiple}"
        raise UserError(f"{option} {text!r}: both sides must be {kind}, e.g. {_example(multiple)}")
    return w, h


def _example(multiple: int) -> str:
    return "256x144" if multiple == 16 else "1280x720"


class Size(click.ParamType):
    """A click option type: WIDTHxHEIGHT -> (width, height), checked as `parse_size` checks it."""

    name = "WxH"

    def __init__(self, multiple: int = 1, minimum: int = 1, maximum: tuple[int, int] = MAX_SIZE) -> None:
        self.multiple, self.minimum, self.maximum = multiple, minimum, maximum

    def convert(self, value, param, ctx) -> tuple[int, int]:
        if isinstance(value, tuple):  # a default given as a tuple, or a value already converted
            return value
        option = param.opts[0] if param is not None and param.opts else "size"
        return parse_size(value, option, self.multiple, self.minimum, self.maximum)


MODEL_SIZE = Size(multiple=16, minimum=16)  # a model's input: four stride-2 stages
VIDEO_SIZE = Size(multiple=2, minimum=16)  # an output picture: H.264 4:2:0 needs even sides
