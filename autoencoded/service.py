"""The parts that run beside the live loop (OSC server, MIDI and audio input, the Link clock, the control
surface, the web remote) share one lifecycle: `start()` returns the part, `stop()` ends it, `with` does both.

    with AudioInput(device="default") as audio:
        ...

`Service` is that lifecycle. `ThreadService` is a service whose work is `_run()` on one daemon thread: the
thread watches (and waits on) the `_stop` event, so `stop()` ends even a sleep at once, then joins it for
`join_s` at most (a thread stuck in a device driver is left behind, never waited on forever) and calls
`_stopped()` to release what the thread held.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from typing import TypeVar

S = TypeVar("S", bound="Service")


class Service(ABC):
    @abstractmethod
    def start(self: S) -> S:
        """Begin; returns self."""

    @abstractmethod
    def stop(self) -> None:
        """End; safe to call again, and after a failed start."""

    def __enter__(self: S) -> S:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ThreadService(Service):
    thread_name = "service"
    join_s = 3.0

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @abstractmethod
    def _run(self) -> None:
        """The work, on the service's thread, until `_stop` is set."""

    def _stopped(self) -> None:  # noqa: B027 - most services hold nothing beyond their thread
        """After the thread ended (or was left behind): release what it held."""

    def start(self: S) -> S:
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.join_s)
            self._thread = None
        self._stopped()
