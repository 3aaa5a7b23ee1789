"""The latency probe (`--input probe`): a test-pattern source whose every frame carries its number in big
black and white cells, and taps that read the number back where each output hands the frame on.

- `ProbeSource` flashes a new code every frame, at the loop's rate, and remembers when it made each one.
- `ProbeTap` wraps a Sink: after the sink has taken a frame it decodes the code (the hand-over); when the
  sink can be read back (`loopback()`: NDI receives its own stream over the network stack) a thread reads
  it back and decodes there too. Either way the latency is "frame made -> code seen", per sink, as
  p50/p95/p99 over the frames seen for the first time.
- The model would dream the cells away, so the live command plays the probe dry (mix 0): every frame still
  goes through the engine, and what comes out is the input it was paired with.

Code layout: an 8 x 4 grid; 4 cells always white and 4 always black (the threshold and the contrast come
from them, so brightness, gamma and lossy codecs do not matter), 16 cells of frame number and 8 of CRC-8,
which rejects a frame that is half one code and half the next.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable

import cv2
import numpy as np

from autoencoded.errors import one_line
from autoencoded.live.io.sinks import Sink
from autoencoded.live.io.sources import CameraClock, Reader, Source

GRID_W, GRID_H = 8, 4
WHITE = [0, 7, 24, 31]  # the corners of the grid
BLACK = [1, 6, 25, 30]
DATA = [i for i in range(GRID_W * GRID_H) if i not in WHITE + BLACK]  # 16 counter bits, then 8 CRC bits
MIN_CONTRAST = 60.0


def _crc8(value: int) -> int:
    crc = 0
    for byte in (value >> 8 & 0xFF, value & 0xFF):
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def encode(number: int, width: int, height: int) -> np.ndarray:
    """The code frame for `number` (mod 65536): uint8 RGB, width x height."""
    number &= 0xFFFF
    word = number << 8 | _crc8(number)
    cells = np.zeros(GRID_W * GRID_H, np.uint8)
    cells[WHITE] = 255
    cells[DATA] = [255 if word >> (23 - i) & 1 else 0 for i in range(24)]
    grid = cells.reshape(GRID_H, GRID_W)
    img = cv2.resize(grid, (width, height), interpolation=cv2.INTER_NEAREST)
    return np.ascontiguousarray(np.repeat(img[:, :, None], 3, axis=2))


def decode(frame: np.ndarray) -> int | None:
    """The number coded in `frame`, or None when it carries no valid code."""
    if frame.ndim != 3 or frame.shape[0] < GRID_H * 4 or frame.shape[1] < GRID_W * 4:
        return None
    h, w = frame.shape[:2]
    ch, cw = h / GRID_H, w / GRID_W
    levels = np.empty(GRID_W * GRID_H, np.float32)
    for i in range(GRID_W * GRID_H):  # the middle half of each cell, subsampled: edges blur in codecs
        y, x = divmod(i, GRID_W)
        patch = frame[int((y + 0.25) * ch):int((y + 0.75) * ch):4, int((x + 0.25) * cw):int((x + 0.75) * cw):4, 1]
        levels[i] = patch.mean()
    white, black = levels[WHITE].min(), levels[BLACK].max()
    if white - black < MIN_CONTRAST:
        return None
    bits = levels[DATA] > (white + black) / 2
    word = 0
    for b in bits:
        word = word << 1 | int(b)
    number, crc = word >> 8, word & 0xFF
    return number if _crc8(number) == crc else None


class _ProbeReader(Reader):
    def __init__(self, source: ProbeSource) -> None:
        self.source = source
        self.clock = CameraClock(source.fps)

    def read(self) -> np.ndarray:
        self.clock.wait()
        return self.source.make()


class ProbeSource(Source):
    """Coded frames at `fps`, like a camera (live: never paced by the loop)."""

    camera = True

    def __init__(self, width: int = 1280, height: int = 720, fps: float = 30.0) -> None:
        self.width, self.height, self.fps = int(width), int(height), float(fps)
        self.name = f"probe {self.width}x{self.height}@{self.fps:g}"
        self.count = 0
        self._made: collections.OrderedDict[int, float] = collections.OrderedDict()
        self._lock = threading.Lock()

    def make(self) -> np.ndarray:
        """The next code frame; its making time is what latencies are measured from."""
        with self._lock:
            number = self.count & 0xFFFF
            self.count += 1
            frame = encode(number, self.width, self.height)
            self._made[number] = time.perf_counter()
            self._made.move_to_end(number)
            while len(self._made) > 4096:
                self._made.popitem(last=False)
        return frame

    def made_at(self, number: int) -> float | None:
        with self._lock:
            return self._made.get(number)

    def open(self) -> Reader:
        return _ProbeReader(self)


class _Seen:
    """Latencies of one observation point: each code counted the first time it is seen."""

    def __init__(self, label: str, source: ProbeSource) -> None:
        self.label, self.source = label, source
        self.latencies_ms: list[float] = []
        self.undecoded = 0
        self._last: int | None = None
        self._lock = threading.Lock()

    def see(self, frame: np.ndarray, now: float) -> None:
        number = decode(frame)
        with self._lock:
            if number is None:
                self.undecoded += 1
                return
            if number == self._last:
                return  # a repeated frame (the loop re-sends when nothing new came)
            self._last = number
            made = self.source.made_at(number)
            if made is not None:
                self.latencies_ms.append((now - made) * 1000.0)

    def report(self) -> dict:
        with self._lock:
            lat = np.asarray(self.latencies_ms, np.float64)
            undecoded = self.undecoded
        out = {"where": self.label, "frames": int(lat.size), "undecoded": undecoded}
        for q in (50, 95, 99):
            out[f"p{q}_ms"] = round(float(np.percentile(lat, q)), 1) if lat.size else None
        return out


class ProbeTap(Sink):
    """Wraps a sink: decodes each frame once the sink has taken it, and (when the sink offers `loopback()`)
    what a receiver gets back from it."""

    def __init__(self, sink: Sink, source: ProbeSource, log: Callable[[str], None] = print) -> None:
        self.sink, self.source, self.log = sink, source, log
        self.name = sink.name
        self.handover = _Seen(f"{sink.name} (handed over)", source)
        self.received: _Seen | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def wants_stop(self) -> bool:  # type: ignore[override]
        return self.sink.wants_stop

    @property
    def close_s(self) -> float | None:  # type: ignore[override]
        inner = self.sink.close_s  # after its read-back thread (joined for up to 3 s), the sink's own close
        return None if inner is None else inner + 3.0

    def open(self, width: int, height: int, fps: float) -> None:
        self.sink.open(width, height, fps)
        self.name = self.sink.name
        loopback = getattr(self.sink, "loopback", None)
        if loopback is not None and self._thread is None:
            self.received = _Seen(f"{self.sink.name} (received back)", self.source)
            self._thread = threading.Thread(target=self._read_back, args=(loopback(),), name="probe-loopback",
                                            daemon=True)
            self._thread.start()

    def write(self, frame: np.ndarray) -> None:
        self.sink.write(frame)
        self.handover.see(frame, time.perf_counter())

    def _read_back(self, source: Source) -> None:
        while not self._stop.is_set():
            reader = None
            try:
                reader = source.open()
                while not self._stop.is_set():
                    frame = reader.read()
                    if frame is None:
                        break
                    self.received.see(frame, time.perf_counter())
            except Exception as exc:  # noqa: BLE001 - keep trying until the loop stops
                self.log(f"probe: reading {self.sink.name} back failed ({one_line(exc, typed=True)}); retrying")
                self._stop.wait(0.5)
            finally:
                if reader is not None:
                    reader.close()

    def report(self) -> list[dict]:
        return [s.report() for s in (self.handover, self.received) if s is not None]

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(3.0)
        self.sink.close()


def report_lines(taps: list[ProbeTap]) -> list[str]:
    """One line per observation point: where, p50/p95/p99 and how many frames."""
    lines = []
    for tap in taps:
        for r in tap.report():
            if not r["frames"]:
                lines.append(f"probe: {r['where']}: no code seen ({r['undecoded']} frames without one)")
                continue
            lines.append(f"probe: {r['where']}: latency p50 {r['p50_ms']:.1f} ms, p95 {r['p95_ms']:.1f} ms, "
                         f"p99 {r['p99_ms']:.1f} ms over {r['frames']} frames"
                         + (f" ({r['undecoded']} without a readable code)" if r["undecoded"] else ""))
    return lines
