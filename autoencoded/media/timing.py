"""Frames that come at uneven times (a variable-frame-rate film, a phone recording) into a file at one
constant rate, keeping real time.

A constant-rate file shows its frame k at k / rate seconds. Writing each frame of a variable-rate film once
at the rate its container states plays it fast or slow (26 frames over 2.56 s written at 25 fps last 1.04
s). So each frame is written at the slot of its own timestamp and held until the next frame's slot, as a
player shows it. The rate is the stated one when every frame gets a slot of its own at it; else the lowest
common rate that gives them one, so that no frame is dropped.
"""

from __future__ import annotations

import subprocess
from fractions import Fraction

import numpy as np

from autoencoded.media.probe import MAX_RATE
from autoencoded.media.tools import ffprobe_path, file_arg

# what films and cameras run at: the candidates when the stated rate cannot give every frame a slot
COMMON_RATES = tuple(Fraction(r) for r in ("24000/1001", "24", "25", "30000/1001", "30", "48", "50", "60000/1001",
                                           "60", "90", "100", "120", "240"))


def packet_times(path) -> np.ndarray | None:
    """The presentation times (s) of the first video stream's packets, ascending, read without decoding;
    None without ffprobe or when it cannot tell."""
    exe = ffprobe_path()
    if exe is None:
        return None
    cmd = [exe, "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pts_time", "-of", "csv=p=0",
           file_arg(path)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=600)
    except (OSError, subprocess.SubprocessError):
        return None
    times = []
    for line in r.stdout.splitlines():
        try:
            times.append(float(line.strip().rstrip(",")))
        except ValueError:
            continue  # N/A: a packet without a timestamp
    t = np.sort(np.asarray(times, dtype=np.float64))
    t = t[np.isfinite(t)]
    return t if t.size >= 2 else None


def slots(times: np.ndarray, rate: Fraction) -> np.ndarray:
    """The output frame each time falls on: the nearest k / rate from the first time."""
    return np.floor((times - times[0]) * float(rate) + 0.5).astype(np.int64)


def shared_slots(times: np.ndarray, rate: Fraction) -> int:
    """How many frames land on a slot an earlier frame already has (they would be dropped)."""
    return int(np.count_nonzero(np.diff(slots(times, rate)) <= 0))


def off_grid(times: np.ndarray, rate: Fraction) -> bool:
    """Whether the times miss the slots of `rate` by more than a tenth of a slot (they were not made at it)."""
    at = (times - times[0]) * float(rate)
    return bool(np.abs(at - np.round(at)).max() > 0.1)


def output_rate(stated: Fraction, times: np.ndarray | None) -> Fraction:
    """The stated rate, unless frames share its slots: then the lowest common rate, or multiple of the
    stated one, up to MAX_RATE that gives each frame its own, preferring one the times lie on (25 fps for
    frames made at 25 and held, not 23.976 that also parts them); else the one that drops fewest."""
    if times is None or len(times) < 2 or shared_slots(times, stated) == 0:
        return stated
    candidates = sorted({r for r in COMMON_RATES if stated < r <= MAX_RATE} |
                        {stated * k for k in range(2, 9) if stated * k <= MAX_RATE})
    best = min(((shared_slots(times, r), off_grid(times, r), i, r) for i, r in enumerate(candidates)), default=None)
    return best[3] if best is not None and best[0] < shared_slots(times, stated) else stated


def is_uneven(times: np.ndarray | None, rate: Fraction) -> bool:
    """Whether the frames are not one per slot at `rate` (held or dropped frames would follow)."""
    return times is not None and len(times) >= 2 and bool(np.any(np.diff(slots(times, rate)) != 1))


class Paced:
    """A writer fed frames with their times: each frame is written at its slot (its time x rate, from the
    first frame's) and held until the next frame's slot. A frame without a time takes the next slot; one on a
    slot already written is dropped; a time past `end_s` (a timestamp jump, not a held picture) is taken as
    the next slot too. `finish()` writes the last frame; `written`, `held` and `dropped` count what happened."""

    def __init__(self, writer, rate: Fraction, end_s: float | None = None) -> None:
        self.writer, self.rate = writer, rate
        self.end_slot = int(np.ceil(end_s * float(rate))) + 1 if end_s else None
        self.t0: float | None = None
        self.pending = None  # the frame shown now, and its slot
        self.written = self.held = self.dropped = self.jumps = 0

    def write(self, frame: np.ndarray, time_s: float | None) -> None:
        if self.pending is None:
            self.t0 = time_s
            self.pending = (frame, 0)
            return
        want = self.pending[1] + 1
        if time_s is not None and self.t0 is not None:
            at = int(np.floor((time_s - self.t0) * float(self.rate) + 0.5))
            if self.end_slot is not None and at > self.end_slot:
                self.jumps += 1
            else:
                want = at
        if want <= self.pending[1]:
            self.dropped += 1
            return
        self._emit(self.pending[0], want - self.pending[1])
        self.pending = (frame, want)

    def finish(self) -> None:
        if self.pending is not None:
            self._emit(self.pending[0], 1)
            self.pending = None

    def _emit(self, frame: np.ndarray, times: int) -> None:
        for _ in range(times):
            self.writer.write(frame)
        self.written += times
        self.held += times - 1
