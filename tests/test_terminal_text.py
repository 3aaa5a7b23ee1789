"""What reaches the terminal never drives it: the command line's error lines and live's event and status
lines escape whatever they quote (a file's name, a peer's bytes, a plugin's text) at the point they are
written, so no message can forget to."""

from __future__ import annotations

import subprocess
import sys

from autoencoded.live.live_cmd import Console
from autoencoded.live.loop.stats import LoopStats

from helpers import headless_env

TITLE = "\x1b]0;owned\x07"  # an OSC sequence that sets the terminal's title


def test_a_file_name_with_an_escape_sequence_is_escaped_in_the_error_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "autoencoded", "live", "--osc-port", "0", "--web", "0", "--input",
                        f"missing{TITLE}.mp4", "--output", "null"], env=headless_env(), cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "\x1b" not in r.stderr and "\x07" not in r.stderr, r.stderr
    assert "missing\\x1b]0;owned\\x07.mp4" in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_live_event_and_status_lines_are_escaped_and_keep_their_line_breaks(tmp_path):
    """A peer's text in an event line, a plugin output's note in the status line: written to a real file."""
    path = tmp_path / "log.txt"
    with path.open("w") as stream:
        console = Console(stream=stream, every_non_tty=0.0)
        console.event(f"osc: /mix {TITLE} refused\nsecond line \u202eright-to-left")
        console.status({**LoopStats().snapshot(), "output_notes": [TITLE]})
    text = path.read_text()
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text, repr(text)
    lines = text.splitlines()
    assert lines[:2] == ["osc: /mix \\x1b]0;owned\\x07 refused", "second line \\u202eright-to-left"], lines
    assert "\\x1b]0;owned\\x07" in lines[2], lines
