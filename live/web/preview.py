"""The web remote's live preview: a Sink that keeps the latest output frame, JPEG-encoded on demand.

write() only swaps a reference (the sink thread never waits for a browser). A frame is encoded once, by
the first client that asks for it, downscaled to MAX_WIDTH and at most MAX_FPS, and every client gets the
latest one when it is ready for more: a slow phone skips frames; it never queues them, so it adds neither
latency nor memory. Nothing is encoded while nobody watches.
"""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np

from autoencoded.live.io.sinks import Sink

MAX_WIDTH = 640
MAX_FPS = 15.0
QUALITY = 70


class Preview(Sink):
    name = "web preview"

    def __init__(self, max_width: int = MAX_WIDTH, max_fps: float = MAX_FPS, quality: int = QUALITY) -> None:
        self.max_width, self.min_interval, self.quality = max_width, 1.0 / max_fps, quality
        self._latest: tuple[int, np.ndarray] | None = None  # (sequence number, RGB frame)
        self._jpeg: tuple[int, bytes] | None = None
        self._encoded_at = 0.0
        self._lock = threading.Lock()
        self.frames = 0
        self.encoded = 0

    def write(self, frame: np.ndarray) -> None:
        self.frames += 1
        self._latest = (self.frames, frame)  # one reference swap; frames are never modified once written

    @property
    def latest(self) -> int:
        """The sequence number of the latest frame (0: none yet)."""
        latest = self._latest
        return 0 if latest is None else latest[0]

    def jpeg(self, newer_than: int = 0) -> tuple[int, bytes] | None:
        """(sequence, JPEG bytes) of the latest frame if it is newer than `newer_than` and the rate cap allows
        a new encode, else None (call again later)."""
        latest = self._latest
        if latest is None:
            return None
        with self._lock:
            cached = self._jpeg
            if cached is not None and cached[0] > newer_than:
                return cached  # encoded for another client, not yet seen by this one
            if latest[0] <= newer_than:
                return None  # nothing new
            if cached is not None and time.monotonic() - self._encoded_at < self.min_interval:
                return None  # the rate cap
            self._jpeg = (latest[0], self._encode(latest[1]))
            self._encoded_at = time.monotonic()
            self.encoded += 1
            return self._jpeg

    def _encode(self, frame: np.ndarray) -> bytes:
        h, w = frame.shape[:2]
        if w > self.max_width:
            frame = cv2.resize(frame, (self.max_width, max(2, round(h * self.max_width / w))),
                               interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        return buf.tobytes()
