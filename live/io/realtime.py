"""A recording that keeps real time: frames stamped with when they were shown, written at a constant rate.

The live loop shows frames at whatever rate the camera and the model allow (25 from a 25 fps clip, 5 from
a slow model at 1080p), while a video file plays at the one rate its header declares. So each frame takes
the slots of the declared rate that fall in the time it was on screen: a frame shown for 3 intervals is
written 3 times, a frame that came and went within one slot is dropped, and the file ends with the slot of
the last frame shown. A recording of N seconds plays N seconds, to within one frame interval.

Encoding runs on a thread of its own behind a short queue, so a slow encoder never holds up the other
outputs. When it falls behind, new frames are dropped at the door (their slots are filled with the frame
before, so time still holds) and `lag()` says how far behind it is, for the status line.
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

import numpy as np

from autoencoded.media.writers import VideoWriter

QUEUE_FRAMES = 8  # frames waiting for the encoder; beyond that they are dropped at the door


class RealTimeWriter:
    """Wraps a VideoWriter declared at `fps`. `write(frame)` from one thread, `close()` when the show stops."""

    def __init__(self, writer: VideoWriter, fps: float, clock=time.perf_counter) -> None:
        self.writer, self.fps, self.clock = writer, float(fps), clock
        self.t0: float | None = None  # when the first frame was shown: slot 0
        self.slots = 0  # slots written so far (the file's length is slots / fps)
        self.shown = 0  # frames handed to write()
        self.repeated = 0  # slots filled with a frame that was still on screen
        self.skipped = 0  # frames that came and went within a slot (faster than fps)
        self.dropped = 0  # frames dropped at the door while the encoder was behind
        self.error: BaseException | None = None
        self._last_shown: float | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUE_FRAMES)
        self._last: np.ndarray | None = None
        self._thread = threading.Thread(target=self._run, name=f"record {writer.path.name}", daemon=True)
        self._thread.start()

    def write(self, frame: np.ndarray) -> None:
        """Hand over a frame shown now. Never blocks; raises the encoder's error once it has failed."""
        if self.error is not None:
            raise self.error
        now = self.clock()
        if self.t0 is None:
            self.t0 = now
        self._last_shown = now
        self.shown += 1
        try:
            self._queue.put_nowait((frame, now))
        except queue.Full:
            self.dropped += 1

    def lag(self) -> float:
        """Seconds of show not yet written to the file (0 when the encoder keeps up)."""
        if self.t0 is None:
            return 0.0
        return max(0.0, self.clock() - self.t0 - self.slots / self.fps)

    def close(self) -> Path:
        """Write what is queued, up to the slot of the last frame shown (frames dropped at the door too),
        finish the file and rename it (VideoWriter.close: returns its name); raises the encoder's error
        (after which the part written is kept, VideoWriter.salvage)."""
        self._finish(self._last_shown)
        if self.error is not None:
            self.writer.abort()
            raise self.error
        return self.writer.close()

    def abort(self) -> None:
        self._finish(None)
        self.writer.abort()

    def _finish(self, end: float | None) -> None:
        """Tell the encoder thread to stop (filling the file through the slot of `end`, unless None) and wait."""
        while self._thread.is_alive():  # waits while the queue is full: the encoder works through it
            try:
                self._queue.put((None, end), timeout=0.1)
                break
            except queue.Full:
                continue
        self._thread.join()

    def _slot(self, t: float) -> int:
        """The slot a moment falls in."""
        return int((t - self.t0) * self.fps + 1e-9)

    def _run(self) -> None:
        try:
            while True:
                frame, t = self._queue.get()
                if frame is None:
                    if t is not None and self._last is not None:  # through the last frame's own slot
                        self._fill(self._slot(t) + 1)
                    return
                due = self._slot(t)
                if self._last is not None and due > self.slots:
                    self._fill(due)  # the previous frame was on screen until now
                if due >= self.slots or self._last is None:
                    self.writer.write(frame)
                    self.slots += 1
                else:
                    self.skipped += 1  # this slot already holds a frame
                self._last = frame
        except BaseException as exc:  # noqa: BLE001 - handed to the loop through write()/close()
            self.error = exc

    def _fill(self, until: int) -> None:
        while self.slots < until:
            self.writer.write(self._last)
            self.slots += 1
            self.repeated += 1
