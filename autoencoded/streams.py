"""Standard streams that are closed, or go away, never stop a command: its output degrades to nothing.

- Closed when the command starts (`2>&-`, `>&- 2>&-`): Python gives such a stream None, and the first
  file or socket the command opens takes the free descriptor, so that whatever writes to "stderr" (a C
  library, `signals.held`'s os.write(2)) would write into it, a recording perhaps. `reopen_closed` points
  descriptors 0-2 that are closed at /dev/null before anything is opened, and the streams Python left None
  at those.
- Gone while it runs (`2>&1 | head -1`: the reader has exited): a write raises BrokenPipeError (Python
  ignores SIGPIPE) in whichever thread logged, and that ended the show. `guard` wraps sys.stdout and
  sys.stderr: a write or flush that fails points the descriptor at /dev/null for good, so that the
  interpreter's last flush, C libraries and other threads' lines find somewhere to go too, and the text is
  dropped.
"""

from __future__ import annotations

import contextlib
import os
import sys

from autoencoded import stderr


def reopen_closed() -> None:
    """Descriptors 0, 1 and 2 that are closed now point at /dev/null; a None sys.stdin/stdout/stderr reads
    or writes there."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    for name, fd, mode in (("stdin", 0, "r"), ("stdout", 1, "w"), ("stderr", 2, "w")):
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, mode, encoding="utf-8", errors="backslashreplace", buffering=1,
                                    closefd=False))


def guard() -> None:
    """sys.stdout and sys.stderr, where they are the process's descriptors 1 and 2, never raise on write."""
    for name, fd in (("stdout", 1), ("stderr", 2)):
        stream = getattr(sys, name)
        with contextlib.suppress(AttributeError, OSError, ValueError):
            if not isinstance(stream, Guarded) and stream.fileno() == fd:
                setattr(sys, name, Guarded(stream, fd))


class Guarded:
    """A text stream whose write and flush never fail: the first OSError (a broken pipe, a terminal gone)
    or ValueError (closed) points its descriptor at /dev/null and drops the text, then and from then on."""

    def __init__(self, stream, fd: int) -> None:
        self._stream, self._fd, self.gone = stream, fd, False

    def write(self, text: str) -> int:
        if not self.gone:
            try:
                return self._stream.write(text)
            except (OSError, ValueError):
                self._lost()
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if not self.gone:
            try:
                self._stream.flush()
            except (OSError, ValueError):
                self._lost()

    def __getattr__(self, name: str):  # encoding, isatty, fileno, buffer ... as the stream has them
        return getattr(self._stream, name)

    def _lost(self) -> None:
        self.gone = True
        # under the lock that `stderr.silenced` holds while it points fd 2 elsewhere and back
        with stderr.LOCK, contextlib.suppress(OSError):
            null = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(null, self._fd)
            finally:
                os.close(null)
