"""Drills: a newcomer adds an output kind, and an inference backend, the way docs/architecture.md says, in one plugin
module each, written here into a temporary folder and named by AUTOENCODED_PLUGINS (autoencoded.plugins).
The real command then lists the new piece in its --help and a real short show uses it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers import COUNTING_SINK, read_video
from helpers import plugin_env as plugin

LIVE = [sys.executable, "-m", "autoencoded", "live", "--osc-port", "0", "--web", "0"]


MEAN_BACKEND = '''
"""A backend without a network: it encodes a frame to its mean colour, and decodes that colour back."""
import numpy as np

from autoencoded.live.engines import register_backend
from autoencoded.live.engines.base import Engine
from autoencoded.live.engines.pack import read_meta


class MeanColour(Engine):
    def __init__(self, pack_dir):
        meta = read_meta(pack_dir)
        self.width, self.height, self.z_dim = meta["width"], meta["height"], meta["z_dim"]
        self.name = "mean colour"

    def encode(self, frames):
        frames = self.check_frames(frames)
        mu = np.zeros((len(frames), self.z_dim), np.float32)
        mu[:, :3] = frames.reshape(len(frames), -1, 3).mean(axis=1) / 127.5 - 1.0
        return mu, np.zeros_like(mu)

    def decode(self, z):
        z = self.check_latents(z)
        rgb = np.clip((z[:, :3] + 1.0) * 127.5, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.broadcast_to(rgb[:, None, None, :], (len(z), self.height, self.width, 3)))


register_backend("meancolour", lambda options: MeanColour(options.path), "each frame's mean colour, no network")
'''


def test_a_plugin_sink_is_listed_by_live_help_and_gets_the_shows_frames(tmp_path, make_video):
    env = plugin(tmp_path, "counting_sink", COUNTING_SINK)
    shown = subprocess.run([*LIVE, "--help"], env=env, capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr
    text = " ".join(shown.stdout.split())  # as read, not as wrapped
    assert "counter[:FILE]" in text and "counter: counts frames into the file ARG names" in text

    clip = make_video(n_frames=30, width=160, height=90, fps=25.0)
    count = tmp_path / "count.txt"
    r = subprocess.run([*LIVE, "--input", str(clip), "--output", f"counter:{count}", "--size", "160x90",
                        "--max-frames", "8"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert int(count.read_text()) > 0, r.stderr


def test_a_plugin_backend_is_a_live_choice_and_plays(tmp_path, make_video):
    env = plugin(tmp_path, "mean_backend", MEAN_BACKEND)
    shown = subprocess.run([*LIVE, "--help"], env=env, capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr
    text = " ".join(shown.stdout.split())
    assert "|meancolour]" in text and "meancolour: each frame's mean colour, no network" in text

    clip = make_video(n_frames=30, width=160, height=90, fps=25.0)
    r = subprocess.run([*LIVE, "--input", str(clip), "--output", "rec.mp4", "--size", "160x90", "--max-frames", "8",
                        "--backend", "meancolour"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    frames = read_video(tmp_path / "rec.mp4")
    # the plugin's engine made them: each frame one colour (the input's is a gradient with a bright square)
    assert frames and all(f.reshape(-1, 3).std(axis=0).max() < 4 for f in frames), r.stderr
    assert read_video(clip, limit=1)[0].reshape(-1, 3).std(axis=0).max() > 40


def test_a_plugin_that_fails_to_import_is_one_line_and_exit_2(tmp_path):
    env = plugin(tmp_path, "broken_plugin", "raise RuntimeError('not today')\n")
    r = subprocess.run([*LIVE, "--help"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert r.stderr == ("error: plugin AUTOENCODED_PLUGINS module broken_plugin: cannot be loaded "
                        "(RuntimeError: not today)\n")


BROKEN_SINK = '''
from autoencoded.live.io.sinks import register_sink

register_sink("broken", lambda options: 1 / 0, "a factory that fails")
register_sink("notasink", lambda options: [options.arg], "a factory that makes a list")
'''

NOT_AN_ENGINE = '''
from autoencoded.live.engines import register_backend

register_backend("notanengine", lambda options: object(), "a factory that makes an object")
'''


def test_a_plugin_whose_factory_fails_or_makes_no_sink_is_one_line_naming_it_and_exit_2(tmp_path, make_video):
    """A plugin's own fault is the plugin's line (exit 2), not an internal error of the command."""
    env = plugin(tmp_path, "broken_sink", BROKEN_SINK)
    clip = make_video(n_frames=10, width=160, height=90, fps=25.0)
    where = "plugin AUTOENCODED_PLUGINS module broken_sink"
    for output, why in (("broken", "failed (ZeroDivisionError: division by zero)"),
                        ("notasink:x", "returned list, not an instance of autoencoded.live.io.sinks.Sink")):
        r = subprocess.run([*LIVE, "--input", str(clip), "--output", output, "--size", "160x90", "--max-frames",
                            "4"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert r.returncode == 2, r.stderr
        assert r.stderr.splitlines()[-1] == f"error: {where}: output {output.split(':')[0]} {why}", r.stderr
        assert "Traceback" not in r.stderr and "internal error" not in r.stderr


def test_a_plugin_backend_that_makes_no_engine_is_one_line_naming_it_and_exit_2(tmp_path, make_video):
    env = plugin(tmp_path, "not_an_engine", NOT_AN_ENGINE)
    clip = make_video(n_frames=10, width=160, height=90, fps=25.0)
    r = subprocess.run([*LIVE, "--input", str(clip), "--output", "null", "--size", "160x90", "--max-frames", "4",
                        "--backend", "notanengine"], env=env, cwd=tmp_path, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2, r.stderr
    assert r.stderr.splitlines()[-1] == ("error: plugin AUTOENCODED_PLUGINS module not_an_engine: backend "
                                         "notanengine returned object, not an instance of autoencoded.live.engines.base.Engine"), r.stderr


def test_every_extra_a_registry_names_is_one_pyproject_declares():
    """The install lines are built from the registries' extras: each must be one pip can install."""
    from autoencoded.documents import parse_toml  # the package's reader
    from autoencoded.live.engines import BACKENDS
    from autoencoded.live.io.sinks import SINKS

    declared = parse_toml((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    named = {e.extra for e in [*SINKS.values(), *BACKENDS.values()] if e.extra}
    assert named and named <= set(declared), named - set(declared)
