"""Shared fixtures: synthetic videos written with OpenCV (real files, read back by the code under test)."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import termios
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

SHARED_FOOTAGE = Path(__file__).resolve().parents[1].parent / "shared" / "footage"

# tests share 2 cores with everything else; keep torch from oversubscribing them
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def synthetic_frame(i: int, width: int, height: int) -> np.ndarray:
    """A BGR frame that changes every index: a moving gradient with a bright square (never static)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    b = (xx / max(width - 1, 1) * 255 + i * 7) % 256
    g = (yy / max(height - 1, 1) * 255 + i * 3) % 256
    r = ((xx + yy) / max(width + height - 2, 1) * 255 + i * 11) % 256
    img = np.stack([b, g, r], axis=-1).astype(np.uint8)
    s = max(4, min(width, height) // 6)
    x0 = (i * 5) % max(1, width - s)
    y0 = (i * 3) % max(1, height - s)
    img[y0:y0 + s, x0:x0 + s] = 255
    return img


def write_video(path: Path, n_frames: int = 24, width: int = 320, height: int = 180, fps: float = 24.0,
                fourcc: str = "mp4v", frame_fn=synthetic_frame) -> Path:
    """Write a real video file with OpenCV and return its path."""
    path = Path(path)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {fourcc} to {path}")
    for i in range(n_frames):
        writer.write(frame_fn(i, width, height))
    writer.release()
    return path


def read_video(path, limit: int | None = None) -> list[np.ndarray]:
    """Every frame of a video file (or the first `limit`), decoded by OpenCV, as RGB uint8 arrays."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    while limit is None or len(frames) < limit:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    return frames


@pytest.fixture
def make_video(tmp_path):
    """make_video(name="clip.mp4", n_frames=24, width=320, height=180, fps=24.0, fourcc="mp4v", frame_fn=...)"""

    def _make(name: str = "clip.mp4", **kw) -> Path:
        return write_video(tmp_path / name, **kw)

    return _make


@pytest.fixture
def shared_footage():
    """The real Big Buck Bunny clips beside the repository; skipped (with the reason) where absent."""
    if not (SHARED_FOOTAGE / "bigbuckbunny.mp4").is_file():
        pytest.skip(f"shared footage not present at {SHARED_FOOTAGE}")
    return SHARED_FOOTAGE


def kick_track(seconds: float = 6.0, rate: int = 44100, bpm: float = 120.0, first: float = 0.25,
               noise: float = 0.02, hats: bool = True, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic dance-floor loop: kick drums at `bpm` from `first` s (a 150->50 Hz sweep decaying in
    ~120 ms), quieter hi-hats on the off-beats and a noise floor. -> (mono float32 samples, kick times s)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    x = rng.normal(0.0, noise, n).astype(np.float32)
    t = np.arange(int(0.4 * rate)) / rate
    sweep = 50.0 + 100.0 * np.exp(-t / 0.03)
    kick = (np.sin(2 * np.pi * np.cumsum(sweep) / rate) * np.exp(-t / 0.12)).astype(np.float32)
    kicks = np.arange(first, seconds - 0.4, 60.0 / bpm)
    for k in kicks:
        i = int(round(k * rate))
        x[i:i + kick.size] += 0.8 * kick
    if hats:
        m = int(0.03 * rate)
        hat = (rng.normal(0.0, 1.0, m) * np.exp(-np.arange(m) / rate / 0.008)).astype(np.float32)
        for k in kicks + 30.0 / bpm:
            i = int(round(k * rate))
            if i + m < n:
                x[i:i + m] += 0.15 * hat
    return np.clip(x, -1.0, 1.0), kicks


def write_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    """16-bit mono PCM WAV (stdlib wave)."""
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return Path(path)


class Terminal:
    """A command running in a pseudo-terminal as its controlling terminal, in its own session and process
    group, as a shell runs a foreground job: `ctrl_c()` types Ctrl-C, and the terminal driver (not this
    test) sends SIGINT to the whole foreground process group, children included."""

    def __init__(self, cmd: list[str], cwd=None, env=None) -> None:
        self.master, slave = os.openpty()

        def controlling_tty() -> None:  # after setsid (start_new_session), in the child
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
            # an interactive shell gives its foreground job default signals, even where this test runs
            # in a background job (which ignores SIGINT and SIGQUIT)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGQUIT, signal.SIG_DFL)

        self.proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env,
                                     start_new_session=True, preexec_fn=controlling_tty)
        os.close(slave)
        self._out = bytearray()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO once the last process holding the terminal exits
                return
            if not data:
                return
            self._out.extend(data)

    @property
    def output(self) -> str:
        return self._out.decode(errors="replace")

    def ctrl_c(self) -> None:
        os.write(self.master, b"\x03")

    def wait(self, timeout: float = 60.0) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            raise
        finally:
            self._reader.join(2.0)
            os.close(self.master)
        return rc
