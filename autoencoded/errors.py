"""User-facing errors: one line, exit code 2, never a traceback."""


class UserError(Exception):
    """Bad input from the user (a file, a flag, a model). The CLI prints `error: <message>` and exits 2."""

    exit_code = 2
