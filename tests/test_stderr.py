"""Fd 2 silenced for ALSA's noise never swallows a log line: real file descriptors, real threads, a real
process whose stderr is a file."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from autoencoded import stderr

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fd 2 is silenced on Linux only")


@linux_only
def test_silenced_drops_c_level_writes_and_restores_fd_2(capfd):
    with stderr.silenced():
        os.write(2, b"ALSA lib seq_hw.c: cannot open\n")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"


@linux_only
def test_no_event_line_is_lost_while_another_thread_silences_stderr(tmp_path):
    """The MIDI watch silences fd 2 on its thread while the show logs on others (the lost "web: remote on"
    line): every line the Console writes meanwhile reaches the file."""
    script = textwrap.dedent("""
        import sys, threading, time
        from autoencoded import stderr
        from autoencoded.live.live_cmd import Console

        done = threading.Event()
        def noisy():
            while not done.is_set():
                with stderr.silenced():
                    time.sleep(0.0005)
                time.sleep(0.0001)
        t = threading.Thread(target=noisy)
        t.start()
        console = Console()
        for i in range(3000):
            console.event(f"line {i}")
            if i % 50 == 0:
                time.sleep(0.001)
        done.set()
        t.join()
    """)
    err = tmp_path / "err.txt"
    with err.open("w") as f:
        subprocess.run([sys.executable, "-c", script], stderr=f, check=True, timeout=120)
    lines = err.read_text().splitlines()
    assert lines == [f"line {i}" for i in range(3000)], f"{3000 - len(lines)} of 3000 lines lost"


def test_a_line_waits_while_a_library_holds_stderr(tmp_path):
    """held(): what importing sounddevice runs under (it silences fd 2 itself): a line logged meanwhile is
    written after, not into /dev/null."""
    from autoencoded.live.live_cmd import Console

    out = (tmp_path / "log.txt").open("w")
    console = Console(stream=out)
    written = threading.Event()
    with stderr.held():
        t = threading.Thread(target=lambda: (console.event("web: remote on"), written.set()))
        t.start()
        time.sleep(0.2)
        assert not written.is_set()
    t.join(timeout=10)
    out.close()
    assert (tmp_path / "log.txt").read_text() == "web: remote on\n"
