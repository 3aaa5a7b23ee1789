"""How a live source's frames become the model's: --crop, the source's pixel aspect and its black bars, for
the model playing now. The frame carries the Framing it was fitted with down the loop (Packet.framing), so
the engine and sink threads never ask for it again.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from autoencoded.live.io.sources import Source
from autoencoded.media.framing import AUTO_CROP_LIMIT, Framing, frame_for


class Framer:
    """`fit` frames a picture for the model of `size` (the engine thread sets it when it swaps a model in),
    working each picture shape out once and saying it in one line. It runs on the source thread alone (and
    in Pipeline.process, while the loop is not running), so its cache needs no lock. `framing` works a
    shape out afresh: for a thread whose frame came unfitted, or fitted for the model before a swap."""

    def __init__(self, source: Source, crop: str, size: tuple[int, int], log: Callable[[str], object]) -> None:
        self.source, self.crop, self.size, self.log = source, crop, size, log
        self._known: dict[tuple[int, int, int, int], Framing] = {}

    def framing(self, frame: np.ndarray, width: int, height: int) -> Framing:
        """How frames of this source, at this frame's size, become width x height ones."""
        h, w = frame.shape[:2]
        bars = getattr(self.source, "bars", None)
        if bars is not None and (bars[0] + bars[2] > w or bars[1] + bars[3] > h):
            bars = None  # found on a picture of another size
        return frame_for(w, h, getattr(self.source, "sar", 1.0), self.crop, width, height, bars, AUTO_CROP_LIMIT)

    def fit(self, frame: np.ndarray) -> tuple[np.ndarray, Framing]:
        """Source thread: (the frame at the model's size, the Framing that made it)."""
        width, height = self.size
        key = (frame.shape[1], frame.shape[0], width, height)
        f = self._known.get(key)
        if f is None:
            f = self._known[key] = self.framing(frame, width, height)
            self.log(f"framing: {self.source.name} {f.describe()}")
        return f.apply(frame, width, height), f
