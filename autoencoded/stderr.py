"""One lock over file descriptor 2, so that a library silencing stderr never swallows a line of ours.

ALSA's MIDI and PortAudio print noise on stderr when they start (`cannot open /dev/snd/seq`, the list of
every PCM they probe), so mido is polled with fd 2 pointed at /dev/null (`silenced`) and sounddevice does
the same by itself when it initialises PortAudio (`import sounddevice`, see sounddevice._initialize). Both
happen on their own threads while the show runs. Fd 2 is the process's, not the thread's: a log line another
thread wrote in that moment went to /dev/null with the noise (the web remote's "web: remote on" line was lost
one start in four on a busy machine). So every event line is written holding `LOCK` (`write_line`), and
whatever points fd 2 elsewhere holds it too.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator

LOCK = threading.RLock()


def write_line(stream, text: str) -> None:
    """`text` on `stream`, flushed, never while fd 2 is silenced."""
    with LOCK:
        stream.write(text)
        stream.flush()


@contextlib.contextmanager
def held() -> Iterator[None]:
    """For a library that points fd 2 at /dev/null by itself (importing sounddevice): no line of ours meanwhile."""
    with LOCK:
        yield


@contextlib.contextmanager
def silenced() -> Iterator[None]:
    """Silence C-level writes to stderr for a moment (Linux; elsewhere a no-op), holding LOCK."""
    with LOCK:
        if not sys.platform.startswith("linux"):
            yield
            return
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):
            yield
            return
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)
