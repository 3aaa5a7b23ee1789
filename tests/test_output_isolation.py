"""Every output is isolated from the show: a plugin sink (a real module named by AUTOENCODED_PLUGINS) whose
write blocks or raises anything at all, or whose close never returns, costs that output only. Real `live`
processes on a synthetic clip; the recording beside it is read back with ffprobe."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

import pytest

from autoencoded.media.tools import have_ffmpeg

from helpers import COUNTING_SINK, plugin_env, streams, wait_for

pytestmark = pytest.mark.skipif(not have_ffmpeg(), reason="ffprobe reads the recordings back")
LIVE = [sys.executable, "-m", "autoencoded", "live", "--osc-port", "0", "--web", "0", "--size", "160x90",
        "--fps", "25"]

# --output misbehave:HOW[@N]: a sink that does HOW at its Nth frame (default 5); counter:FILE counts frames
MISBEHAVING_SINK = r'''
import threading
from pathlib import Path

from autoencoded.live.io.sinks import Sink, register_sink


class Boom(BaseException):
    """Not an Exception: what no `except Exception` catches."""


RAISES = {"exit": lambda: SystemExit(3), "interrupt": lambda: KeyboardInterrupt(), "boom": lambda: Boom("boom"),
          "escape": lambda: RuntimeError("bad \x1b]0;owned title\x07 text")}


class Misbehaving(Sink):
    def __init__(self, arg):
        self.how, _, at = arg.partition("@")
        self.at, self.frames, self.name = int(at or 5), 0, f"misbehave {self.how}"

    def write(self, frame):
        self.frames += 1
        if self.frames == self.at:
            if self.how == "block":
                threading.Event().wait()
            if self.how in RAISES:
                raise RAISES[self.how]()

    def close(self):
        if self.how == "hang-close":
            threading.Event().wait()


register_sink("misbehave", lambda o: Misbehaving(o.arg), "a sink that blocks or raises", arg="HOW")
''' + COUNTING_SINK.split("from autoencoded.live.io.sinks import Sink, register_sink", 1)[1]  # counter:FILE


def recorded_seconds(path) -> float:
    """How long the recording plays, as ffprobe decodes it (every frame read, not the header's word)."""
    video = streams(path)["video"]
    return int(video["nb_read_frames"]) / 25.0


def test_outputs_that_block_or_raise_anything_are_dropped_and_the_show_plays_its_duration(tmp_path, make_video):
    env = plugin_env(tmp_path, "misbehaving_sink", MISBEHAVING_SINK)
    clip = make_video(n_frames=50, width=160, height=90, fps=25.0)
    hows = ("block", "exit", "interrupt", "boom", "escape")
    outputs = [a for how in hows for a in ("--output", f"misbehave:{how}")]
    r = subprocess.run([*LIVE, "--input", str(clip), *outputs, "--output", f"counter:{tmp_path / 'count'}",
                        "--output", "rec.mp4", "--duration", "4"],
                       env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    err = r.stderr
    assert r.returncode == 1, err  # an output failed: the exit status says so, after the whole show
    lines = err.splitlines()
    for how, why in (("block", "a write has not returned in 2 s"), ("exit", "SystemExit: 3"),
                     ("interrupt", "KeyboardInterrupt"), ("boom", "Boom: boom"),
                     ("escape", r"RuntimeError: bad \x1b]0;owned title\x07 text")):
        assert [ln for ln in lines if ln.startswith(f"output misbehave {how} ")] == \
            [f"output misbehave {how} failed ({why}); dropping it"], err
    assert "\x1b" not in err and "\x07" not in err and "Traceback" not in err, err
    assert "error: 5 output(s) failed" in lines[-1], err
    # the others played on to the end: the recording lasts the duration, the counter got every frame of it
    assert abs(recorded_seconds(tmp_path / "rec.mp4") - 4.0) <= 0.2, err
    assert int((tmp_path / "count").read_text()) >= 50, err


def test_a_close_that_never_returns_is_left_behind_after_its_deadline_and_the_recording_is_kept(tmp_path,
                                                                                                make_video):
    env = plugin_env(tmp_path, "misbehaving_sink", MISBEHAVING_SINK)
    clip = make_video(n_frames=50, width=160, height=90, fps=25.0)
    r = subprocess.run([*LIVE, "--input", str(clip), "--output", "misbehave:hang-close", "--output", "rec.mp4",
                        "--duration", "2"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    lines = r.stderr.splitlines()
    assert r.returncode == 1, r.stderr
    assert "output misbehave hang-close: closing failed (close has not returned in 5 s; left behind)" in lines
    assert any(ln.startswith("recorded 2.0 s to rec.mp4") for ln in lines), r.stderr
    assert abs(recorded_seconds(tmp_path / "rec.mp4") - 2.0) <= 0.2, r.stderr


def test_sigterm_still_ends_a_show_whose_output_never_closes(tmp_path, make_video):
    """No --duration: SIGTERM stops the show, the recording is finished, the hung close is left behind."""
    env = plugin_env(tmp_path, "misbehaving_sink", MISBEHAVING_SINK)
    clip = make_video(n_frames=50, width=160, height=90, fps=25.0)
    proc = subprocess.Popen([*LIVE, "--input", str(clip), "--output", "misbehave:hang-close", "--output",
                             "rec.mp4"], env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        wait_for(lambda: any(ln.startswith("framing:") for ln in lines), "the show to start", timeout=90)
        threading.Event().wait(1.0)  # a second of show
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(5)
    text = "".join(lines)
    assert rc == 1, text  # interrupted, and an output failed: the failure is what the status says
    assert "output misbehave hang-close: closing failed (close has not returned in 5 s; left behind)\n" in text
    assert "stopped (interrupted)" in text, text
    assert recorded_seconds(tmp_path / "rec.mp4") >= 0.5, text
