"""A show whose stdout or stderr is closed, or whose reader goes away, plays on silently and keeps its
recording: real `live` processes started by a real shell with its redirections (`2>&-`, `>&- 2>&-`,
`2>&1 | head -1`), the recording read back whole with ffprobe."""

from __future__ import annotations

import subprocess
import sys

import pytest

from autoencoded.media.tools import have_ffmpeg

from helpers import headless_env, streams

pytestmark = [pytest.mark.skipif(not have_ffmpeg(), reason="ffprobe reads the recordings back"),
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a POSIX shell's redirections")]

LIVE = [sys.executable, "-m", "autoencoded", "live", "--osc-port", "0", "--web", "0", "--size", "160x90",
        "--fps", "25", "--duration", "2", "--output", "rec.mp4"]


@pytest.mark.parametrize("shell", [
    '"$@" 2>&-',  # stderr closed
    '"$@" >&- 2>&-',  # both closed
    '"$@" 2>&1 | head -1; exit ${PIPESTATUS[0]}',  # the reader leaves after the first line
])
def test_a_show_with_closed_or_broken_output_streams_plays_its_duration_and_keeps_the_recording(
        tmp_path, make_video, shell):
    clip = make_video(n_frames=50, width=160, height=90, fps=25.0)
    r = subprocess.run(["bash", "-c", shell, "live", *LIVE, "--input", str(clip)], env=headless_env(),
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert r.stderr == "" and r.stdout.count("\n") <= 1, (r.stdout, r.stderr)  # no traceback, at most head's line
    video = streams(tmp_path / "rec.mp4")["video"]  # finished and decodable to its last frame
    assert abs(int(video["nb_read_frames"]) - 50) <= 2, video
    assert not list(tmp_path.glob("*partial*")), list(tmp_path.iterdir())
