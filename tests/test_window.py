"""The preview window (README's fallback for a desktop without a virtual camera) under a real X display: Xvfb,
started here, with DISPLAY set for the live process. Before: every stop (--duration, Ctrl-C, SIGTERM, q)
hung for ever, the window having been made on one thread and destroyed from another."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import wait_for

REPO = Path(__file__).resolve().parents[1]
HANG_S = 600  # a guard against the hang itself, not a speed check (starting live takes a minute under load)


@pytest.fixture
def xvfb():
    """A fresh X display (Xvfb :NN) -> the environment for a process that draws on it."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (apt install xvfb)")
    n = next(n for n in range(90, 200) if not Path(f"/tmp/.X11-unix/X{n}").exists()
             and not Path(f"/tmp/.X{n}-lock").exists())
    server = subprocess.Popen(["Xvfb", f":{n}", "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: Path(f"/tmp/.X11-unix/X{n}").exists(), "Xvfb to listen", timeout=60, poll_s=0.05)
        env = dict(os.environ, DISPLAY=f":{n}")
        env.pop("WAYLAND_DISPLAY", None)
        yield env
    finally:
        server.terminate()
        server.wait(30)


def live_window(env, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "autoencoded", "live", "--input", "demo", "--output", "window",
           "--size", "320x180", "--osc-port", "0", "--web", "0", *extra]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    try:
        out, _ = proc.communicate(timeout=HANG_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(f"live with a window did not stop:\n{out[-2000:]}") from None
    return proc.returncode, out


def window_on(env) -> bool:
    """Whether the X server shows a window titled autoencoded."""
    r = subprocess.run(["xwininfo", "-root", "-tree"], env=env, capture_output=True, text=True)
    return '"autoencoded"' in r.stdout


@pytest.mark.skipif(shutil.which("xwininfo") is None, reason="needs xwininfo (x11-utils)")
def test_the_window_shows_and_duration_ends_the_show(xvfb):
    proc = live_window(xvfb, "--duration", "4")
    wait_for(lambda: window_on(xvfb) or proc.poll() is not None, "the window to appear", timeout=HANG_S, poll_s=0.2)
    assert window_on(xvfb), "a real window on the X display"
    rc, out = finish(proc)
    assert rc == 0, out
    assert "stopped: " in out and "Traceback" not in out, out
    assert not window_on(xvfb), "the window is destroyed when the show stops"


@pytest.mark.skipif(shutil.which("xwininfo") is None, reason="needs xwininfo (x11-utils)")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_ends_a_show_with_a_window(xvfb, sig):
    proc = live_window(xvfb)
    wait_for(lambda: window_on(xvfb) or proc.poll() is not None, "the window to appear", timeout=HANG_S, poll_s=0.2)
    time.sleep(0.5)  # a few frames into the window
    os.killpg(proc.pid, sig)  # as a terminal's Ctrl-C or a service manager does: the whole group
    rc, out = finish(proc)
    assert rc == 130, out
    assert "stopped (interrupted): " in out and "Traceback" not in out, out
