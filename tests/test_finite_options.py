"""Numbers from the command line are finite (issue 34, item 6): every float option of every command, found by
walking the CLI, refuses nan, inf and -inf in one line with exit 2, through the real command; `live --duration
nan` (which ran for ever) and `memory --max-pack-mb nan` (an internal error) as the installed command does."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest

from autoencoded.cli import COMMANDS, cli, main
from autoencoded.numbers import Finite

from helpers import headless_env


def commands() -> list[tuple[list[str], click.Command, click.Context]]:
    """Every command of the CLI, subcommands of groups included: (its words, the command, its context)."""
    found = []

    def walk(words: list[str], command: click.Command, parent: click.Context) -> None:
        ctx = click.Context(command, info_name=words[-1], parent=parent)
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                walk([*words, name], command.get_command(ctx, name), ctx)
        else:
            found.append((words, command, ctx))

    root = click.Context(cli, info_name="autoencoded")
    for name in COMMANDS:
        walk([name], cli.get_command(root, name), root)
    return found


def float_options() -> list[tuple[list[str], click.Option, list[str]]]:
    """(command words, option, placeholders for what the command requires) for every option that takes a
    float; get_params, as click does, so the options a command builds when it runs (train's loss terms) are
    there too."""
    out = []
    for words, command, ctx in commands():
        params = command.get_params(ctx)
        placeholders = [word for p in params if p.required and p.nargs > 0 for word in
                        ([p.opts[0]] if isinstance(p, click.Option) else []) + ["placeholder"] * p.nargs]
        for p in params:
            kinds = p.type.types if isinstance(p.type, click.Tuple) else [p.type]
            if isinstance(p, click.Option) and any(isinstance(k, click.types.FloatParamType) for k in kinds):
                out.append((words, p, placeholders))
    return out


FLOAT_OPTIONS = float_options()


def test_the_walk_finds_the_float_options_of_every_kind_of_command():
    found = {(" ".join(words), p.opts[0]) for words, p, _ in FLOAT_OPTIONS}
    assert {("live", "--duration"), ("live", "--fps"), ("memory", "--max-pack-mb"), ("export", "--max-pack-mb"),
            ("train", "--lr"), ("train", "--gamma"), ("render", "--memory"), ("bench", "--seconds"),
            ("prepare", "--dedupe")} <= found


@pytest.mark.parametrize("words, option, placeholders", FLOAT_OPTIONS,
                         ids=[f"{' '.join(w)} {p.opts[0]}" for w, p, _ in FLOAT_OPTIONS])
def test_every_float_option_refuses_nan_and_inf(capsys, words, option, placeholders):
    assert isinstance(option.type, Finite), "a float option takes autoencoded.numbers.Finite"
    flag = option.opts[0]
    for value in ("nan", "inf", "-inf", "NaN", "+Infinity", "1e400"):
        # the option first: click converts in the order it reads; the placeholders are converted, never opened
        assert main([*words, f"{flag}={value}", *placeholders]) == 2, (words, flag, value)
        err = capsys.readouterr().err.strip()
        assert err == f"error: {flag} {value}: must be a finite number", err


@pytest.mark.parametrize("args, says", [
    (["live", "--fps", "0"], "--fps 0: must be between 1 and 240"),
    (["live", "--duration", "0"], "--duration 0: must be more than 0"),
    (["live", "--mix", "loud"], "--mix loud: expected a number"),
    (["train", "--ema", "1", "ds"], "--ema 1: must be at least 0 and less than 1"),
    (["memory", "--max-pack-mb", "41", "m", "f"], "--max-pack-mb 41: must be more than 0 and at most 40"),
    (["bench", "--seconds", "\x1b[2J"], "--seconds \\x1b[2J: expected a number"),  # escaped, never run
])
def test_a_number_out_of_range_is_one_line_too(capsys, args, says):
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == f"error: {says}"


@pytest.mark.parametrize("args", [["live", "--duration", "nan", "--input", "probe", "--osc-port", "0", "--web", "0"],
                                  ["memory", "model-pack", "footage", "--max-pack-mb", "nan"]],
                         ids=["live --duration nan", "memory --max-pack-mb nan"])
def test_the_commands_that_ran_for_ever_or_failed_inside_refuse_nan(tmp_path, args):
    res = subprocess.run([sys.executable, "-m", "autoencoded", *args], cwd=tmp_path, env=headless_env(),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().count("\n") == 0 and "must be a finite number" in res.stderr, res.stderr
    assert list(tmp_path.iterdir()) == []  # no recording, no pack: refused before anything started
