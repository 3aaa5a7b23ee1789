"""Hot swap: a model asked for mid-show (/model, the web remote) is loaded off the loop and swapped in
between two frames.

    swap = ModelSwap(install=pipeline_install, playing=lambda: engine, threads=1, log=print)
    swap.request("other.aepack")    # a Future: the new engine's name, or the load's error
    if swap.pending: swap.swap_in() # engine thread, between two frames

The load runs on the loader's thread (loader.py: one at a time, the latest request wins). A loaded engine
waits here until the engine thread takes it, so a frame never sees half a swap; a newer one replaces a
waiting one (closed unused, its Future cancelled). `install(engine)` puts it in the loop; when it raises
(a latent the loop cannot play) the engine is closed, the Future holds why, and the current model plays on.
After `close()` nothing is swapped in: whatever arrives is closed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future

from autoencoded.errors import close_quietly, one_line
from autoencoded.live.engines.base import Engine
from autoencoded.live.loop.loader import ModelLoader
from autoencoded.text import printable


class ModelSwap:
    def __init__(self, install: Callable[[Engine], None], playing: Callable[[], Engine], *,
                 threads: int | None, log: Callable[[str], object]) -> None:
        self.install, self.playing, self.threads, self.log = install, playing, threads, log
        self.error = ""  # why the last request was not swapped in ("" once one is)
        self.loader = ModelLoader(self._open, self.deliver, self._failed, log)
        self._lock = threading.Lock()
        self._pending: tuple[Engine, Future] | None = None
        self._closed = False

    def request(self, spec: object, backend: str) -> Future:
        return self.loader.request(spec, backend=backend)

    @property
    def pending(self) -> bool:
        return self._pending is not None

    @property
    def loading(self) -> bool:
        return self.loader.busy

    def _open(self, spec: object, backend: str) -> Engine:
        from autoencoded.live.engines import model_name, open_engine

        engine = open_engine(spec, backend=backend, log=self.log, threads=self.threads, memory=True)
        engine.label = model_name(spec)  # "now playing" names the model, not only the backend it runs on
        return engine

    def _failed(self, spec: object, exc: BaseException) -> None:
        why = printable(one_line(exc, typed=True))
        self.error = f"{printable(spec)}: {why}"
        self.log(f"model: could not load {printable(spec)} ({why}); still playing {self.playing().name}")

    def deliver(self, engine: Engine, fut: Future) -> None:
        """Loader thread: a loaded engine waits here for the engine thread to swap it in between frames."""
        with self._lock:
            superseded, self._pending = self._pending, (engine, fut)
        if superseded is not None:
            close_quietly(superseded[0])
            superseded[1].cancel()
        if self._closed:
            self.swap_in()

    def swap_in(self) -> None:
        """Engine thread, between two frames: the waiting engine, if any, goes in."""
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is None:
            return
        engine, fut = pending
        if self._closed:
            close_quietly(engine)
            fut.cancel()
            return
        try:
            self.install(engine)
        except Exception as exc:  # noqa: BLE001 - a model this loop cannot play is refused, the old one plays on
            close_quietly(engine)
            self._failed(engine.name, exc)
            if fut.set_running_or_notify_cancel():
                fut.set_exception(exc)
            return
        self.error = ""
        self.log(f"model: now playing {printable(engine.label) or 'a model'} on {engine.name}")
        fut.set_result(engine.name)

    def close(self, wait_s: float) -> bool:
        """No more swaps: waits up to `wait_s` for a load under way (False if it is still running), closes
        the engine that waits."""
        finished = self.loader.close(wait_s)
        self._closed = True
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            close_quietly(pending[0])
            pending[1].cancel()
        return finished
