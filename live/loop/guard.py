"""The last line of defence of every live-loop thread: an exception is caught, counted and logged, and the
thread carries on with its next iteration (a live show degrades, it never dies or freezes).

    guard = ThreadGuard("engine", stats, log)
    while running:
        with guard:
            one_iteration()

The first exception of a streak is logged in one line, the streak's end too; each one counts in
`LoopStats.loop_errors` (the status line, --stats-json and the web remote show it). Faults a thread
expects (an engine's bad frame, a source outage) are handled where they happen; this is for the rest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType

from autoencoded.errors import one_line
from autoencoded.live.loop.stats import LoopStats

PAUSE_S = 0.01  # after an exception: a thread that fails at once every time must not spin a core


class ThreadGuard:
    """`with guard:` around one iteration of a loop thread. Everything raised ends there, MemoryError,
    SystemExit and KeyboardInterrupt included: on a thread that is not the main one (Ctrl-C and stop
    signals reach the main thread only) they come from code it called, a plugin backend perhaps, and
    letting them pass ended the thread without a word."""

    def __init__(self, thread: str, stats: LoopStats, log: Callable[[str], object]) -> None:
        self.thread, self.stats, self.log = thread, stats, log
        self.streak = 0

    def __enter__(self) -> ThreadGuard:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        if exc is None:
            if self.streak:
                self.log(f"{self.thread} thread: recovered after {self.streak} error(s)")
                self.streak = 0
            return False
        why = one_line(exc, typed=True)
        self.stats.count_loop_error(f"{self.thread}: {why}")
        if self.streak == 0:
            self.log(f"{self.thread} thread: {why}; carrying on (counted in loop errors)")
        self.streak += 1
        time.sleep(PAUSE_S)
        return True
