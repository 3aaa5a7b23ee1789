"""One WxH option type for every command: bad sizes are one line and exit 2, naming the option."""

from __future__ import annotations

import pytest

from autoencoded.cli import main


@pytest.mark.parametrize("args, option", [
    (["prepare", "v.mp4", "-o", "ds", "--size", "256x145"], "--size"),
    (["prepare", "v.mp4", "-o", "ds", "--size", "99999x99984"], "--size"),
    (["train", "ds", "-o", "run", "--size", "big"], "--size"),
    (["bench", "--size", "16x16x16"], "--size"),
    (["live", "--size", "1281x720"], "--size"),
    (["live", "--size", "100000x720"], "--size"),
    (["render", "demo", "out.mp4", "--size", "640x3"], "--size"),
    (["render", "demo", "out.mp4", "--upscale", "640x3"], "--size"),  # the old name of the same option
])
def test_bad_size_is_one_line_and_exit_2(args, option, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {option} ") and "\n" not in err
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


@pytest.mark.parametrize("text, says", [
    ("99999x99999", "between"),  # too big and odd: the size is what is wrong, not its parity
    ("7681x720", "between"),
    ("1281x720", "even"),
    ("8x8", "between"),
])
def test_a_size_out_of_bounds_is_said_before_its_parity(text, says, capsys):
    assert main(["live", "--size", text]) == 2
    err = capsys.readouterr().err
    assert says in err and ("even" not in err if says == "between" else True), err
