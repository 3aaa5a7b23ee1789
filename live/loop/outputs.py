"""Every output (sink) on a thread of its own: one that blocks or fails never holds up the show.

The sink thread hands each frame to every output's thread, then waits at most one frame interval for the
ones that were idle: an output that keeps up gets every frame in order, as if written inline, while a slow
one gets the newest frame when it is ready (the ones between are skipped for it alone). An output whose
write raised anything at all (SystemExit and KeyboardInterrupt included: raised by a sink they are its
fault, not a stop request, which reaches the main thread only) or has been inside one write for WRITE_S
is a fault: the pipeline drops it with one line, and the other outputs, the recording and --duration go on.

`close()` runs on the output's thread after the last frame handed over. Each output gets its sink's
`close_s` for it (None: waited for, which a recording is, since its file must be finished); one still
closing past that is left behind, registered as a thread that may be inside native code, so the process
ends without waiting for it (autoencoded.shutdown). A thread left behind inside a write is registered too.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from autoencoded.errors import one_line
from autoencoded.live.io.sinks import Sink
from autoencoded.shutdown import native_thread
from autoencoded.text import printable

WRITE_S = 2.0  # one write this long has blocked (a frame takes milliseconds to hand to any device or file)


@dataclass(frozen=True)
class Fault:
    """Why an output is dropped: `why` for the summary, `detail` (the exception's type too) for the log."""

    sink: Sink
    why: str
    detail: str


def sink_name(sink: Sink) -> str:
    """A sink's name, safe to print (a plugin chooses it)."""
    try:
        return printable(sink.name, 120)
    except Exception:  # noqa: BLE001 - a name that cannot even be read is still an output
        return printable(type(sink).__name__, 120)


def sink_note(sink: Sink) -> str:
    """sink.note() for the status line, '' when it fails (a word of status is not worth a fault)."""
    try:
        return printable(sink.note() or "", 120)
    except Exception:  # noqa: BLE001
        return ""


def wants_stop(sink: Sink) -> bool:
    try:
        return bool(sink.wants_stop)
    except Exception:  # noqa: BLE001 - a flag that fails to read asks nothing
        return False


class Output:
    """One sink and the thread that writes to it and closes it."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self._cond = threading.Condition()
        self._frame: np.ndarray | None = None  # handed over, not yet taken by the thread
        self._handed = 0  # frames handed over so far
        self._done = 0  # the number of the last frame whose write returned
        self._busy_since: float | None = None  # when the write running now began
        self._closing = False
        self.stuck = False  # left inside a write: never waited for again
        self.error: BaseException | None = None  # what write() raised; the thread then closes the sink
        self.close_error: BaseException | None = None
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"output {sink_name(sink)}", daemon=True)
        self.thread.start()

    def hand(self, frame: np.ndarray) -> int | None:
        """Give the thread `frame` (it replaces one not yet taken). -> its number, to wait for, when the
        thread was idle; None when it is still inside an earlier write (it is not waited for)."""
        with self._cond:
            self._handed += 1
            self._frame = frame
            self._cond.notify_all()
            return self._handed if self._busy_since is None else None

    def wait(self, number: int, until: float) -> None:
        """Until frame `number` is written, the write has failed, or time.monotonic() reaches `until`."""
        with self._cond:
            while self._done < number and self.error is None:
                left = until - time.monotonic()
                if left <= 0:
                    return
                self._cond.wait(left)

    def fault(self, now: float | None = None) -> Fault | None:
        """Why this output must be dropped now, None while it plays."""
        if self.error is not None:
            return _raised(self.sink, self.error)
        busy = self._busy_since
        now = time.monotonic() if now is None else now
        if busy is not None and now - busy >= WRITE_S:
            self.stuck = True
            native_thread(self.thread)  # left inside the write: the process must not wait for it at exit
            why = f"a write has not returned in {WRITE_S:g} s"
            return Fault(self.sink, why, why)
        return None

    def finish(self) -> None:
        """Ask the thread to close the sink once the frame handed over last is written."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()

    def close_s(self) -> float | None:
        try:
            limit = self.sink.close_s
            return None if limit is None else max(0.0, float(limit))
        except Exception:  # noqa: BLE001 - a plugin's odd attribute: the default
            return Sink.close_s

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._frame is None and not self._closing:
                    self._cond.wait()
                frame, number, self._frame = self._frame, self._handed, None
                if frame is None:  # closing, nothing left to write
                    break
                self._busy_since = time.monotonic()
            try:
                self.sink.write(frame)
            except BaseException as exc:  # noqa: BLE001 - see the module docstring
                with self._cond:
                    self.error, self._busy_since = exc, None
                    self._cond.notify_all()
                break
            with self._cond:
                self._done, self._busy_since = number, None
                self._cond.notify_all()
        try:
            self.sink.close()
        except BaseException as exc:  # noqa: BLE001 - said by the pipeline, as a close that failed
            self.close_error = exc
        finally:
            self.closed.set()


class Outputs:
    """The outputs of one show: `write` every frame, then `close` them all."""

    def __init__(self, sinks: list[Sink]) -> None:
        self.playing = [Output(s) for s in sinks]
        self.dropped: list[Output] = []  # closing, or left behind

    def write(self, frame: np.ndarray, wait_s: float) -> list[Fault]:
        """Hand `frame` to every output; wait up to `wait_s` for those that were idle. -> the outputs that
        failed or blocked, dropped from now on."""
        handed = [(o, o.hand(frame)) for o in self.playing]
        until = time.monotonic() + wait_s
        for o, number in handed:
            if number is not None:
                o.wait(number, until)
        faults = []
        for o in list(self.playing):
            fault = o.fault()
            if fault is not None:
                self.playing.remove(o)
                self.dropped.append(o)
                o.finish()  # it closes as soon as its thread is free (at once after a failed write)
                faults.append(fault)
        return faults

    def close(self) -> list[Fault]:
        """Close every output at once, each within its close_s. -> those whose close failed or was left
        behind (an output dropped while playing closes meanwhile; its close is waited for, not reported)."""
        start = time.monotonic()
        for o in self.playing:
            o.finish()
        faults = []
        for o in [*self.playing, *(o for o in self.dropped if not o.stuck)]:
            limit = o.close_s()
            if limit is None:
                o.closed.wait()
            elif not o.closed.wait(max(0.0, start + limit - time.monotonic())):
                native_thread(o.thread)  # the process ends without it (autoencoded.shutdown)
                if o in self.playing:
                    why = f"close has not returned in {limit:g} s; left behind"
                    faults.append(Fault(o.sink, why, why))
                continue
            if o in self.playing and o.close_error is not None:
                faults.append(_raised(o.sink, o.close_error))
        return faults


def _raised(sink: Sink, exc: BaseException) -> Fault:
    # SystemExit(3) says "3": past Exception, the type is what tells
    why = one_line(exc, typed=not isinstance(exc, Exception))
    return Fault(sink, printable(why), printable(one_line(exc, typed=True)))
