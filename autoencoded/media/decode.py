"""A video's frames as the stream holds them: each at its own size, with its presentation time.

Both OpenCV and ffmpeg's rawvideo output scale every frame to the size of the first one, so a stream whose
picture changes size part-way (a portrait segment after a landscape one, in a transport stream) arrives
stretched, and a pipe of bare frames carries no times, so a variable-frame-rate film looks like a constant
one. Here ffmpeg is told not to scale (-autoscale 0), and its showinfo filter says, frame by frame on
stderr, the size, pixel aspect and timestamp of the frame that follows on stdout; a thread reads those
lines, so neither pipe can fill while the other is waited on.

Without ffmpeg, OpenCV gives what it can: the time of each frame, at the first frame's size.
"""

from __future__ import annotations

import queue
import re
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from autoencoded import signals
from autoencoded.media.tools import error_line, ffmpeg_path, file_arg


@dataclass
class Picture:
    rgb: np.ndarray  # uint8 H x W x 3, the frame's own size
    time_s: float | None  # presentation time from the stream's start; None where the decoder does not tell
    sar: float | None = None  # the frame's pixel aspect, where the decoder tells it


# "n:   3 pts:  10800 pts_time:0.12 pos: ... sar:1/1 s:640x360 ..." (pts in the filter's time base, exact;
# pts_time has six significant digits, a tenth of a second two hours in)
_FRAME = re.compile(r"\bn:\s*(\d+)\s+pts:\s*(-?\d+|NOPTS)\b.*?\bsar:(\d+)/(\d+)\s+s:(\d+)x(\d+)")
_TIME_BASE = re.compile(r"config in time_base:\s*(\d+)/(\d+)")


class Pictures:
    """Iterate for the frames of `path` in presentation order; `close()` stops the decoder (from any thread).
    After the end, `error` is the decoder's complaint when it failed part-way, else None."""

    def __init__(self, path: str | Path, decoder: str = "ffmpeg") -> None:
        self.path = Path(path)
        self.decoder = decoder if decoder == "opencv" or ffmpeg_path() else "opencv"
        self.error: str | None = None
        self._proc: subprocess.Popen | None = None
        self._cap = None

    def __iter__(self) -> Iterator[Picture]:
        return self._ffmpeg() if self.decoder == "ffmpeg" else self._opencv()

    def close(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()

    # ---------------------------------------------------------------------------------------------- ffmpeg
    def _ffmpeg(self) -> Iterator[Picture]:
        cmd = [ffmpeg_path() or "ffmpeg", "-hide_banner", "-nostats", "-v", "info", "-nostdin",
               "-i", file_arg(self.path), "-map", "0:v:0", "-an", "-sn", "-dn",
               "-vf", "showinfo=checksum=0", "-autoscale", "0", "-vsync", "passthrough",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
        # its own session: a terminal's Ctrl-C reaches us, and we stop the decoder
        proc = self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE, **signals.CHILD)
        heads: queue.Queue = queue.Queue()
        said: list[str] = []
        reader = threading.Thread(target=_read_log, args=(proc.stderr, heads, said), name="decode-log", daemon=True)
        reader.start()
        try:
            while True:
                head = heads.get()
                if head is None:
                    break
                time_s, sar, w, h = head
                data = _read_exactly(proc.stdout, w * h * 3)
                if data is None:
                    break
                yield Picture(np.frombuffer(data, np.uint8).reshape(h, w, 3), time_s, sar)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stdout.close()
            rc = proc.wait()
            reader.join(timeout=5)
            proc.stderr.close()
        if rc not in (0, -9):
            self.error = error_line("\n".join(said)) or f"ffmpeg exited with code {rc}"

    # ---------------------------------------------------------------------------------------------- OpenCV
    def _opencv(self) -> Iterator[Picture]:
        cap = cv2.VideoCapture(str(self.path))
        try:
            while True:
                ok, bgr = cap.read()
                if not ok or bgr is None:
                    break
                msec = cap.get(cv2.CAP_PROP_POS_MSEC)
                yield Picture(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), msec / 1000 if msec >= 0 else None)
        finally:
            cap.release()


def _read_exactly(stream, n: int) -> bytearray | None:
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = stream.readinto(view[got:])
        if not k:
            return None
        got += k
    return buf


def _read_log(stderr, heads: queue.Queue, said: list[str]) -> None:
    """Decoder log thread: each frame's (time, sar, width, height) in order, then None; other lines, the
    last 20, kept for the error."""
    base = Fraction(1, 1)
    t0: int | None = None
    try:
        for raw in stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            m = _FRAME.search(line)
            if m:
                pts = None if m.group(2) == "NOPTS" else int(m.group(2))
                if pts is not None and t0 is None:
                    t0 = pts
                time_s = float((pts - t0) * base) if pts is not None and t0 is not None else None
                num, den = int(m.group(3)), int(m.group(4))
                heads.put((time_s, num / den if num > 0 and den > 0 else None, int(m.group(5)), int(m.group(6))))
                continue
            m = _TIME_BASE.search(line)
            if m and int(m.group(2)) > 0:
                new = Fraction(int(m.group(1)), int(m.group(2)))
                if t0 is not None and new != base:  # a filter graph set up again: keep the clock running
                    t0 = int(t0 * base / new)
                base = new
                continue
            if line and "Parsed_showinfo" not in line:
                said.append(line)
                del said[:-20]
    finally:
        heads.put(None)
