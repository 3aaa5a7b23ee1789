"""Stop signals: SIGTERM and SIGHUP do what Ctrl-C does, in every command, and children stay out of the way.

- `install()` (called once by the command line) makes SIGTERM and SIGHUP raise KeyboardInterrupt in the main
  thread, as SIGINT does: each command's Ctrl-C path (finish the recording, save a checkpoint, remove temp
  files) then runs for a service manager's stop or a closed terminal too, and the exit status is 130.
- `route_stop(callback)` routes all three to a callback instead, for code that stops at a safe point of its
  own (the trainer finishes its step and saves); a second signal raises at once.
- `held(what)` holds them while something that must not be cut short finishes (a recording being
  finalised): each says in one line that it waits, and none cuts the finishing short. A recording that a
  second Ctrl-C abandoned half-finalised was lost whole.
- `CHILD` are the Popen arguments for helper processes such as ffmpeg: a session of their own, so a
  terminal's Ctrl-C, which goes to the whole foreground process group, reaches only us, and we close the
  children in order (an encoder killed with us leaves a truncated file).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator

#: SIGINT (Ctrl-C), SIGTERM (kill, service managers), SIGHUP (the terminal closed), where the OS has them
STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))
INTERRUPTED_EXIT = 130  # 128 + SIGINT, what shells report after Ctrl-C
CHILD: dict = {"start_new_session": True}


def _raise(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def install() -> None:
    """SIGTERM and SIGHUP raise KeyboardInterrupt like Ctrl-C. Only from the main thread (a no-op elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in STOP_SIGNALS:
        if sig != signal.SIGINT and signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, _raise)


def route_stop(callback: Callable[[int], object]) -> Callable[[], None]:
    """Until the returned function is called, the first stop signal calls `callback(signum)` instead of
    raising, and a second one raises KeyboardInterrupt at once. Off the main thread (where Python cannot
    set handlers) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def first(signum: int, frame: object) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, _raise)
        callback(signum)

    previous = {sig: signal.signal(sig, first) for sig in STOP_SIGNALS}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)

    return restore


def ignore_from_now() -> None:
    """The command has finished and the process is on its way out with its status: a stop signal now would
    only print a KeyboardInterrupt traceback from the interpreter's shutdown, so it is ignored."""
    if threading.current_thread() is threading.main_thread():
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)


@contextlib.contextmanager
def held(what: str) -> Iterator[list[int]]:
    """Inside the block, stop signals do not interrupt: each one writes "still finishing WHAT; ..." to stderr
    and is recorded in the yielded list (a caller may act on it afterwards). Off the main thread, or nested
    inside another hold, it changes nothing."""
    got: list[int] = []
    if threading.current_thread() is not threading.main_thread() or _holding:
        yield got
        return
    line = f"still finishing {what}; stop signals wait until that is done\n".encode(errors="replace")

    def hold(signum: int, frame: object) -> None:
        got.append(signum)
        try:  # os.write, not print: a handler may run inside a print of the main thread's own
            os.write(2, line)
        except OSError:  # the terminal is gone (SIGHUP)
            pass

    previous = {sig: signal.signal(sig, hold) for sig in STOP_SIGNALS}
    _holding.append(True)
    try:
        yield got
    finally:
        _holding.pop()
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


_holding: list[bool] = []
