"""JSON and TOML text from files a user hands us (dataset.json, model.json, a checkpoint's config, presets).

Python's parsers recurse once per nesting level, so a few kilobytes of `[[[[...` raise RecursionError, which
is not a ValueError and used to escape every `except ValueError` as an "internal error". Here every bad
document, malformed or nested too deeply, is a ValueError (DocumentError), so callers keep one except clause.
"""

from __future__ import annotations

import dataclasses
import json
import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


class DocumentError(ValueError):
    """A JSON or TOML document that cannot be read: malformed, or nested too deeply."""


def parse_json(text: str | bytes) -> object:
    try:
        return json.loads(text)
    except RecursionError:
        raise DocumentError("JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and UnicodeDecodeError for bytes
        raise DocumentError(str(exc)) from None


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
