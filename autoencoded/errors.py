"""User-facing errors: one line, exit code 2, never a traceback."""


class UserError(Exception):
    """Bad input from the user (a file, a flag, a model). The CLI prints `error: <message>` and exits 2."""

    exit_code = 2


def one_line(exc: BaseException, typed: bool = False, limit: int = 200) -> str:
    """An exception as one short line for a status message: its first line of text (else its type name),
    prefixed with the type when `typed` (for faults that are not the user's, where the type says most)."""
    try:
        lines = str(exc).strip().splitlines()
    except Exception:  # noqa: BLE001 - a plugin's exception whose __str__ fails still has a type
        lines = []
    text = lines[0][:limit] if lines else ""
    if typed:
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text or type(exc).__name__


def close_quietly(thing) -> None:
    """thing.close(), its failure dropped: for what is being let go of (a superseded engine, a sink after a
    fault), whose close failing changes nothing the caller could act on."""
    try:
        thing.close()
    except Exception:  # noqa: BLE001 - see the docstring
        pass
