"""The `autoencoded` command: one click group, each subcommand living in the package that owns it.

Subcommands are imported lazily, so `autoencoded live` never pays for the training loop's imports and
`autoencoded prepare` never imports onnxruntime. Plugins (autoencoded.plugins) are imported first.
"""

from __future__ import annotations

import importlib
import io
import os
import sys

import click

from autoencoded import shutdown, signals, streams
from autoencoded.errors import UserError
from autoencoded.plugins import load_plugins
from autoencoded.text import printable_lines

# name -> (module, attribute); each command's help is its own docstring
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("autoencoded.training.prepare_cmd", "prepare"),
    "train": ("autoencoded.training.train_cmd", "train"),
    "eval": ("autoencoded.training.eval_cmd", "eval_"),
    "export": ("autoencoded.export.export_cmd", "export"),
    "memory": ("autoencoded.export.memory_cmd", "memory"),
    "live": ("autoencoded.live.live_cmd", "live"),
    "render": ("autoencoded.live.render_cmd", "render"),
    "bench": ("autoencoded.live.bench_cmd", "bench"),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module_name, attr = COMMANDS[cmd_name]
        # before the command's module: its options and --help are built from the registries when imported
        load_plugins()
        return getattr(importlib.import_module(module_name), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="autoencoded")
def cli() -> None:
    """autoencoded: train a VAE-GAN on a film and perform live with its memory of it."""


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors become one line on stderr and exit code 2; Ctrl-C, SIGTERM and SIGHUP
    exit 130. Run as the command (argv None), closed or broken standard streams degrade to nothing
    (autoencoded.streams), and the process ends here when a thread is still inside native code
    (autoencoded.shutdown), with the same status."""
    if argv is None:
        streams.reopen_closed()
        streams.guard()
    code = _main(argv)
    if argv is None:
        signals.ignore_from_now()
        shutdown.exit_if_stuck(code)
    return code


def _main(argv: list[str] | None) -> int:
    debug = os.environ.get("AUTOENCODED_DEBUG") == "1"
    signals.install()
    try:
        # outside standalone mode click returns ctx.exit(code)'s code instead of raising it
        code = cli.main(args=argv, prog_name="autoencoded", standalone_mode=False)
    except UserError as exc:
        _say(f"error: {exc}")
        return exc.exit_code
    except click.exceptions.Abort:
        _say_interrupted()
        return signals.INTERRUPTED_EXIT
    except click.ClickException as exc:
        shown = io.StringIO()
        exc.show(file=shown)
        _say(shown.getvalue().rstrip("\n"))
        return exc.exit_code
    except KeyboardInterrupt:
        _say_interrupted()
        return signals.INTERRUPTED_EXIT
    except click.exceptions.Exit as exc:
        return exc.exit_code
    # a bug, not bad input: still one line unless debugging. SystemExit and other BaseExceptions too: no code
    # of ours raises them (click ends with its own Exit), so they came from a library or a plugin, and must
    # not end the command silently or with a traceback
    except BaseException as exc:  # noqa: BLE001
        if debug:
            raise
        _say(f"internal error: {type(exc).__name__}: {exc} (set AUTOENCODED_DEBUG=1 for a traceback)")
        return 1
    return code if isinstance(code, int) else 0


def _say(text: str) -> None:
    """An error on stderr, escaped: what it quotes may come from a plugin, a file or a network peer."""
    click.echo(printable_lines(text), err=True)


def _say_interrupted() -> None:
    try:
        click.echo("interrupted", err=True)
    except OSError:  # after SIGHUP the terminal may be gone
        pass


if __name__ == "__main__":
    sys.exit(main())
