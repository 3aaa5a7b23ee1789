"""File names that look like something else to ffmpeg and ffprobe reach them as file names, through the
real commands: a name beginning with '-' (an option to ffprobe) and '-' alone (stdin to both).
`./-clip.mp4` on the command line becomes the path "-clip.mp4" inside Python."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from autoencoded.media.tools import have_ffmpeg

pytestmark = pytest.mark.skipif(not have_ffmpeg(), reason="ffmpeg/ffprobe are not installed")
NAMES = ["-clip.mp4", "-"]


def clip_with_sound(path) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=160x90:rate=10:duration=1",
                    "-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                    "-c:a", "aac", "-f", "mp4", f"file:{path}"], check=True)


def autoencoded(*args, cwd) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    return subprocess.run([sys.executable, "-m", "autoencoded", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("name", NAMES)
def test_prepare_reads_the_file(tmp_path, name):
    clip_with_sound(tmp_path / name)
    r = autoencoded("prepare", f"./{name}", "-o", "ds", "--size", "64x48", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "10 frames 64x48 kept of 10 decoded" in r.stdout
    assert json.loads((tmp_path / "ds" / "dataset.json").read_text())["complete"] is True


@pytest.mark.parametrize("name", NAMES)
def test_render_keeps_the_sound_of_the_file(tmp_path, name):
    clip_with_sound(tmp_path / name)
    out = f"./{name.removesuffix('.mp4')}-out.mp4"
    r = autoencoded("render", f"./{name}", out, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "with audio" in r.stdout
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_type", "-of", "csv=p=0",
                            f"file:{tmp_path / out}"], capture_output=True, text=True, check=True).stdout
    assert probe.split() == ["video", "audio"]
