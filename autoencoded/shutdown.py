"""Threads that may still be inside native code when a command ends: a model load (onnxruntime or torch
building a session) or an inference that hangs. Python's shutdown would tear the native libraries down
under them, which aborts the process ("terminate called without an active exception", exit 134).

Such threads register here; the command line (autoencoded.cli.main) finishes its clean-up, then ends the
process with os._exit when one is still alive, keeping the exit status it would have returned.
"""

from __future__ import annotations

import os
import sys
import threading
import weakref

_threads: weakref.WeakSet[threading.Thread] = weakref.WeakSet()


def native_thread(thread: threading.Thread) -> threading.Thread:
    """Register `thread` (before or after it starts) as one that runs native code; returns it."""
    _threads.add(thread)
    return thread


def stuck() -> list[str]:
    """The names of registered threads still running."""
    return sorted(t.name for t in list(_threads) if t.is_alive())


def exit_if_stuck(code: int) -> None:
    """End the process now, with `code`, when a registered thread is still running: skip the interpreter's
    shutdown, which would abort under it. Output streams are flushed first; files were closed by then."""
    if not stuck():
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
