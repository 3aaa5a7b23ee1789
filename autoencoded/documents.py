"""JSON and TOML text from files a user hands us (dataset.json, model.json, a checkpoint's config, presets),
and JSON from a network peer (the web remote's requests: parse_strict_json, with bounded numbers and depth).

Python's parsers recurse once per nesting level, so a few kilobytes of `[[[[...` raise RecursionError, which
is not a ValueError and used to escape every `except ValueError` as an "internal error". Here every bad
document, malformed or nested too deeply, is a ValueError (DocumentError), so callers keep one except clause.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import tomllib


class DocumentError(ValueError):
    """A JSON or TOML document that cannot be read: malformed, or nested too deeply."""


def parse_json(text: str | bytes) -> object:
    return parse_json_with(text)


_DOUBLE_DIGITS = len(str(int(sys.float_info.max)))


def parse_strict_json(text: str | bytes, max_depth: int) -> object:
    """JSON from a network peer: as parse_json, and held to what every JSON reader can take (RFC 8259, 6 and
    9), so nothing past here meets a number a float cannot hold: every number is a finite double (no NaN or
    Infinity, no 1e999, no integer beyond a double's range, which float() would raise OverflowError on), and
    arrays and objects nest at most `max_depth` deep."""
    doc = parse_json_with(text, parse_constant=_refuse_constant, parse_float=_finite_float, parse_int=_double_int)
    level, depth = [doc], 0
    # one level of arrays and objects at a time: no recursion however deep the document
    while level := [c for c in level if isinstance(c, (dict, list))]:
        depth += 1
        if depth > max_depth:
            raise DocumentError(f"JSON nested deeper than {max_depth} levels")
        level = [v for c in level for v in (c.values() if isinstance(c, dict) else c)]
    return doc


def parse_json_with(text: str | bytes, **hooks) -> object:
    """json.loads with its hooks, every failure a DocumentError (see parse_json)."""
    try:
        return json.loads(text, **hooks)
    except RecursionError:
        raise DocumentError("JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, a hook's refusal, and UnicodeDecodeError for bytes
        raise DocumentError(str(exc)) from None


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text[:32]}")
    return value


def _double_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    # a double's largest is 309 digits long: a longer integer is refused before int() spends time on it
    if digits > _DOUBLE_DIGITS or abs(value := int(text)) > sys.float_info.max:
        raise ValueError(f"number out of range: a {digits}-digit integer")
    return value


def parse_toml(text: str) -> dict:
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise DocumentError("TOML nested too deeply") from None
    except tomllib.TOMLDecodeError as exc:
        raise DocumentError(str(exc)) from None


def check_fields(cls: type, d: dict, what: str) -> None:
    """ValueError naming the keys of `d` that are no field of the dataclass `cls` (a config from a newer
    version, or a typo), before `cls(**d)` would raise a TypeError that names only one of them."""
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"unknown {what} keys: {', '.join(sorted(unknown))}")
