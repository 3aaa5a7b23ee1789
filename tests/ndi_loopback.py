"""Scenarios that need NDI over loopback, run by test_ndi.py inside a network namespace that holds only `lo`
(`unshare -n`), with NDI pointed at 127.0.0.1. Each prints one JSON line of findings for the test to check.

    python tests/ndi_loopback.py SCENARIO [ARGS...]
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import numpy as np


def pattern(w: int, h: int, shift: int = 0) -> np.ndarray:
    """Smooth gradients and flat blocks (what NDI's codec keeps within a few grey levels)."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.empty((h, w, 3), np.uint8)
    img[..., 0] = (x * 255 // max(w - 1, 1) + shift) % 256
    img[..., 1] = y * 255 // max(h - 1, 1)
    img[..., 2] = 40
    img[h // 4:h // 2, w // 4:w // 2] = (200, 60, 120)
    return img


class Sending:
    """Sends frames from a thread at `fps` until stopped (another app's NDI output)."""

    def __init__(self, name: str, w: int, h: int, fps: float = 30.0, still: bool = True) -> None:
        from autoencoded.live.io.ndi import NdiSink

        self.sink = NdiSink(name, log=lambda m: None)
        self.sink.open(w, h, fps)
        self.frame = pattern(w, h)
        self.fps, self.size, self.still = fps, (w, h), still
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0 / self.fps):
            self.sink.write(self.frame if self.still else pattern(*self.size, shift=self.sent))
            self.sent += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sink.close()


def pixels() -> dict:
    """NdiSink -> NdiSource: the received frame against the sent one."""
    from autoencoded.live.io.ndi import NdiSource

    w, h = 320, 180
    sending = Sending("pixels", w, h)
    reader = NdiSource("pixels").open()
    try:
        frames = [reader.read() for _ in range(5)]
    finally:
        reader.close()
        sending.stop()
    got = frames[-1]
    diff = np.abs(got.astype(np.int16) - sending.frame.astype(np.int16))
    return {"shape": list(got.shape), "dtype": str(got.dtype), "p99_diff": float(np.percentile(diff, 99)),
            "mean_diff": float(diff.mean()), "max_diff": int(diff.max())}


def stall() -> dict:
    """The live loop fed by NDI: the sender stalls (holds the last frame), then a new sender of the same name
    comes back (reconnects)."""
    from autoencoded.live.engines import open_engine
    from autoencoded.live.io.ndi import NdiSource
    from autoencoded.live.io.sinks import NullSink
    from autoencoded.live.loop.pipeline import Pipeline

    logs: list[str] = []
    sending = Sending("stall", 256, 144)
    sink = NullSink()
    p = Pipeline(NdiSource("stall"), open_engine(None, backend="onnxruntime", log=logs.append), [sink],
                 fps=30, size=(256, 144), log=logs.append)
    p.start()
    try:
        t0 = time.monotonic()
        while p.stats()["frames_in"] < 10 and time.monotonic() - t0 < 15:
            time.sleep(0.05)
        before = p.stats()
        sending.stop()  # the other app stalls and goes away
        time.sleep(2.5)
        during = p.stats()
        sending = Sending("stall", 256, 144)
        t0 = time.monotonic()
        while p.stats()["source_recoveries"] < 1 and time.monotonic() - t0 < 20:
            time.sleep(0.1)
        time.sleep(0.5)
        after = p.stats()
    finally:
        p.stop()
        sending.stop()
    return {"before_in": before["frames_in"], "held_during": during["frames_held"] - before["frames_held"],
            "out_during": during["frames_out"] - before["frames_out"], "outages": after["source_outages"],
            "recoveries": after["source_recoveries"], "in_after": after["frames_in"] - during["frames_in"],
            "logs": logs, "outage_log": [{k: v for k, v in o.items() if k in ("reason", "first_reason", "reopens")} for o in p.feed.outages]}


EVIL_NAME = "evil\x1b[31mred\x1b]0;pwned\x07"


def escaped_names() -> dict:
    """Another app sends under a name holding terminal control sequences; a receiver that looks for a name
    nobody sends says what it saw."""
    from autoencoded.live.io.ndi import NdiSource

    sending = Sending(EVIL_NAME, 64, 36)
    try:
        NdiSource("nobody", find_timeout=8.0).open()
        error = None
    except OSError as exc:
        error = str(exc)
    finally:
        sending.stop()
    return {"error": error}


def live_cli(seconds: str, *args: str) -> dict:
    """`autoencoded live ... --output ndi:autoencoded` in a subprocess, received here by an NDI receiver."""
    from autoencoded.live.io.ndi import NdiSource

    cmd = [sys.executable, "-m", "autoencoded", "live", *args, "--duration", seconds, "--osc-port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    frames, sizes = [], set()
    head = []
    try:
        for line in proc.stderr:  # start-up takes long on a busy machine: wait until it says it is sending
            head.append(line)
            if "NDI: sending" in line or "error" in line:
                break
        reader = NdiSource("autoencoded", find_timeout=15.0, connect_timeout=10.0, give_up=10.0).open()
        try:
            for _ in range(30):
                f = reader.read()
                if f is None:
                    break
                sizes.add(f.shape)
                frames.append(f[::8, ::8].astype(np.int16))
        finally:
            reader.close()
    finally:
        out, err = proc.communicate(timeout=120)
        err = "".join(head) + err
    changes = [float(np.abs(a - b).mean()) for a, b in zip(frames, frames[1:], strict=False)]
    return {"rc": proc.returncode, "stderr": err[-3000:], "received": len(frames),
            "sizes": sorted(list(s) for s in sizes), "mean_level": float(np.mean([f.mean() for f in frames]))
            if frames else 0.0, "max_change": max(changes, default=0.0)}


def live_cli_probe(frames: str, stats_json: str) -> dict:
    """`autoencoded live --input probe --output ndi:autoencoded`: the probe reads its codes back over NDI."""
    cmd = [sys.executable, "-m", "autoencoded", "live", "--input", "probe", "--output", "ndi:autoencoded",
           "--size", "320x180", "--max-frames", frames, "--osc-port", "0", "--stats-json", stats_json]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    return {"rc": r.returncode, "stderr": r.stderr[-3000:]}


if __name__ == "__main__":
    name, *rest = sys.argv[1:]
    print(json.dumps({"pixels": pixels, "stall": stall, "live_cli": live_cli, "escaped_names": escaped_names,
                      "live_cli_probe": live_cli_probe}[name](*rest)))
