"""Whatever a plugin raises, and whatever text it raises it with, is one escaped line naming it: at import
(SystemExit, KeyboardInterrupt and BaseException subclasses too, exit 2) and in its factory. Real plugin
modules named by AUTOENCODED_PLUGINS, loaded by the real command."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import plugin_env

LIVE = [sys.executable, "-m", "autoencoded", "live", "--osc-port", "0", "--web", "0"]
WHERE = "error: plugin AUTOENCODED_PLUGINS module {}: cannot be loaded"


@pytest.mark.parametrize("raises, said", [
    ("raise SystemExit(0)", "SystemExit: 0"),
    ("raise SystemExit(3)", "SystemExit: 3"),
    ("import sys; sys.exit('bye')", "SystemExit: bye"),
    ("raise KeyboardInterrupt", "KeyboardInterrupt"),
    ("class Doom(BaseException): pass\nraise Doom('the end')", "Doom: the end"),
])
def test_a_plugin_raising_anything_at_import_is_one_line_and_exit_2(tmp_path, raises, said):
    env = plugin_env(tmp_path, "bad_plugin", raises + "\n")
    r = subprocess.run([*LIVE, "--help"], env=env, capture_output=True, text=True, timeout=120)
    assert (r.returncode, r.stdout) == (2, ""), r.stderr
    assert r.stderr == f"{WHERE.format('bad_plugin')} ({said})\n"


def test_an_escape_sequence_in_a_plugins_error_never_reaches_the_terminal_raw(tmp_path):
    """An OSC title sequence and a bidi override in the error text come out as visible escapes."""
    env = plugin_env(tmp_path, "sly_plugin", "raise RuntimeError('x\\x1b]0;owned\\x07y \\u202eevil')\n")
    r = subprocess.run([*LIVE, "--help"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr == f"{WHERE.format('sly_plugin')} (RuntimeError: x\\x1b]0;owned\\x07y \\u202eevil)\n"


def test_a_plugin_module_name_with_an_escape_is_printed_escaped(tmp_path):
    env = plugin_env(tmp_path, "fine_plugin", "")
    env["AUTOENCODED_PLUGINS"] = "no_such\x1b[2Jmodule"
    r = subprocess.run([*LIVE, "--help"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "\x1b" not in r.stderr, r.stderr
    assert r.stderr.startswith(WHERE.format("no_such\\x1b[2Jmodule")), r.stderr


LEAVING_SINKS = '''
from autoencoded.live.io.sinks import Sink, register_sink


def leave(options):
    raise SystemExit("\\x1b]0;owned\\x07")


class LeavesOnOpen(Sink):
    name = "opener"

    def open(self, width, height, fps):
        raise SystemExit(4)

    def write(self, frame):
        pass


register_sink("leaver", leave, "a factory that exits the process")
register_sink("opener", lambda options: LeavesOnOpen(), "a sink whose open exits the process")
'''


@pytest.mark.parametrize("output, why", [("leaver", "output leaver failed (SystemExit: \\x1b]0;owned\\x07)"),
                                         ("opener", "output opener: opening failed (SystemExit: 4)")])
def test_a_plugin_sink_raising_systemexit_when_made_or_opened_is_one_escaped_line_and_exit_2(
        tmp_path, make_video, output, why):
    env = plugin_env(tmp_path, "leaving_sinks", LEAVING_SINKS)
    clip = make_video(n_frames=10, width=160, height=90, fps=25.0)
    r = subprocess.run([*LIVE, "--input", str(clip), "--output", output, "--size", "160x90", "--max-frames", "4"],
                       env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.splitlines()[-1] == f"error: plugin AUTOENCODED_PLUGINS module leaving_sinks: {why}", r.stderr
    assert "\x1b" not in r.stderr and "Traceback" not in r.stderr
