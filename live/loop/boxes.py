"""One-slot latest-value boxes: how the live loop's threads hand frames to each other.

A writer never waits: `put` replaces whatever is in the slot (the replaced item is counted as dropped),
so a slow reader always gets the newest frame and latency stays constant instead of growing a queue.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from autoencoded.media.framing import Framing


@dataclass
class Packet:
    """A frame travelling through the live loop: each thread fills in its part (source, engine, sink)."""

    frame: np.ndarray  # the source's picture as it came, uint8 H x W x 3 RGB
    t_capture: float  # time.perf_counter() when the source produced it
    index: int = 0  # running number of the source frame
    held: bool = False  # True when it is the last good frame repeated during a source outage
    model_input: np.ndarray | None = None  # source thread: `frame` fitted to the model's size (None: not done)
    framing: Framing | None = None  # how `frame` became the model's; the sink frames the input's picture with it
    model_output: np.ndarray | None = None  # engine thread: the model's picture at its size (None: a fault)
    mix: float = 1.0  # engine thread: this frame's dry/wet, as it was played
    shown: np.ndarray | None = None  # sink thread: the output frame, composed at the output size

    def after_engine(self, model_output: np.ndarray | None, mix: float, framing: Framing | None = None) -> Packet:
        """The packet the engine thread hands on: this source frame with the model's picture, its mix and the
        framing it was fitted with (`framing`, else the source thread's)."""
        return Packet(frame=self.frame, t_capture=self.t_capture, index=self.index, held=self.held,
                      model_output=model_output, mix=mix, framing=framing or self.framing)


class LatestBox:
    """A one-slot box. `put` never blocks; `get` waits up to `timeout` for an item not yet taken."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: object | None = None
        self._closed = False
        self.dropped = 0  # items replaced before anyone took them

    def put(self, item: object) -> bool:
        """Store `item`; returns True when it replaced an item nobody had taken (a dropped frame)."""
        if item is None:
            raise ValueError("LatestBox items must not be None")
        with self._cond:
            replaced = self._item is not None
            if replaced:
                self.dropped += 1
            self._item = item
            self._cond.notify_all()
            return replaced

    def get(self, timeout: float | None = None) -> object | None:
        """Take the item, waiting up to `timeout` seconds; None on timeout or once closed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._item is None and not self._closed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        """Wake every waiting reader; later gets return what is left, then None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed
