"""Model loads for hot swaps: one at a time on a background thread, and the latest request wins.

A flood of `/model` requests costs at most two loads (the one running and the newest), never one thread
each; a load that was overtaken by a newer request is closed unused. `close()` waits for a running load
to finish (a model half-built inside onnxruntime or torch must not be torn down by interpreter shutdown)
and says whether it did. A load that has hung for longer than STALL_S does not hold back the next request:
that one starts on a fresh thread, and the hung one's engine is dropped if it ever arrives. The loader
thread never dies: a load's failure, and any failure to hand its engine over, is reported and the next
request is served.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

from autoencoded.errors import close_quietly, one_line
from autoencoded.shutdown import native_thread

STALL_S = 60.0  # a load running this long is hung (a TensorRT build takes minutes, but not in live swaps)


class ModelLoader:
    """`request(spec, **options)` -> a Future; `open_engine(spec, **options)` runs on the loader thread, then
    `deliver(engine, future)` hands the engine over (it resolves the future), or `failed(spec, exc)` says why
    not (the future then holds the exception)."""

    def __init__(self, open_engine: Callable[..., object], deliver: Callable[[object, Future], None],
                 failed: Callable[[object, BaseException], None], log: Callable[[str], object]) -> None:
        self.open_engine, self.deliver, self.failed, self.log = open_engine, deliver, failed, log
        self._lock = threading.Lock()
        self._next: tuple[object, dict, Future] | None = None
        self._loading = False
        self._worker: threading.Thread | None = None
        self._started = 0.0  # when the running load began (or its thread was started)
        self._generation = 0
        self._closed = False
        self.loads = 0  # loads begun (a flood of requests must not raise this by more than two)
        self.superseded = 0

    @property
    def worker(self) -> threading.Thread | None:
        """The thread running (or last to run) a load."""
        return self._worker

    @property
    def busy(self) -> bool:
        """A load is running or waiting."""
        with self._lock:
            return self._loading or self._next is not None

    def request(self, spec: object, **options: object) -> Future:
        fut: Future = Future()
        with self._lock:
            if self._closed:
                fut.cancel()
                return fut
            previous, self._next = self._next, (spec, options, fut)
            running = self._worker is not None and self._worker.is_alive()
            stalled = running and time.monotonic() - self._started > STALL_S
            if stalled:
                self.log(f"model: the load begun {time.monotonic() - self._started:.0f} s ago is hung; "
                         "loading the new request beside it")
            if not running or stalled:
                self._generation += 1
                # its load begins now: a second request before the thread takes the first must not see a
                # load begun at 0.0 (the machine's uptime ago) and start another thread beside it
                self._started = time.monotonic()
                self._worker = native_thread(threading.Thread(target=self._run, args=(self._generation,),
                                                              name="model-loader", daemon=True))
                self._worker.start()
        if previous is not None:
            self.superseded += 1
            previous[2].cancel()
        return fut

    def _run(self, generation: int) -> None:
        while True:
            with self._lock:
                if self._generation != generation or self._next is None or self._closed:
                    return
                (spec, options, fut), self._next = self._next, None
                self._started = time.monotonic()
                self._loading = True
                self.loads += 1
            try:
                engine = self.open_engine(spec, **options)
            except BaseException as exc:  # noqa: BLE001 - any failure keeps the current model
                with self._lock:
                    self._loading = False
                self._settle(fut, spec, exc)
                continue
            with self._lock:
                self._loading = False
                unused = self._closed or self._generation != generation or self._next is not None
            if unused:  # overtaken by a newer request, or stopping: close it unused
                if not self._closed and self._generation == generation:
                    self.superseded += 1
                close_quietly(engine)
                fut.cancel()
                continue
            try:
                self.deliver(engine, fut)
            except Exception as exc:  # noqa: BLE001 - the current model plays on
                close_quietly(engine)
                self._settle(fut, spec, exc)

    def _settle(self, fut: Future, spec: object, exc: BaseException) -> None:
        """A load that failed: say why (failed()), and the future holds the exception."""
        try:
            self.failed(spec, exc)
        except Exception as report:  # noqa: BLE001 - reporting must not end the loader thread
            self.log(f"model: a load failed ({one_line(exc, typed=True)}; reporting it: {one_line(report)})")
        if fut.set_running_or_notify_cancel():
            fut.set_exception(exc)

    def close(self, timeout: float) -> bool:
        """Take no more requests, drop a waiting one, and wait up to `timeout` s for a running load to end
        (its engine is then closed unused). True when no load is still running."""
        with self._lock:
            self._closed = True
            waiting, self._next = self._next, None
            worker = self._worker
        if waiting is not None:
            waiting[2].cancel()
        if worker is not None:
            worker.join(timeout)
            return not worker.is_alive()
        return True
