"""The `autoencoded` command: one click group, each subcommand living in the package that owns it.

Subcommands are imported lazily, so `autoencoded live` never pays for the training loop's imports and
`autoencoded prepare` never imports onnxruntime.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from autoencoded import shutdown, signals
from autoencoded.errors import UserError

# name -> (module, attribute, issue that delivers it, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "prepare": ("autoencoded.training.prepare_cmd", "prepare", "Turn one or more video files into a training dataset."),
    "train": ("autoencoded.training.train_cmd", "train", "Train the VAE-GAN on a prepared dataset."),
    "eval": ("autoencoded.training.eval_cmd", "eval_", "Score a model's reconstructions against baselines."),
    "export": ("autoencoded.export.export_cmd", "export", "Export a run or checkpoint to an ONNX model pack."),
    "memory": ("autoencoded.export.memory_cmd", "memory", "Give a model pack the memory bank of its film."),
    "live": ("autoencoded.live.live_cmd", "live", "Run a camera or video through the model in real time."),
    "render": ("autoencoded.live.render_cmd", "render", "Reconstruct every frame of a film offline, with its audio."),
    "bench": ("autoencoded.live.bench_cmd", "bench", "Measure inference speed of every available backend."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module_name, attr, help_text = COMMANDS[cmd_name]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            return _not_ready(cmd_name, help_text)
        return getattr(module, attr)


def _not_ready(name: str, help_text: str) -> click.Command:
    @click.command(name=name, help=f"{help_text} (not available yet)",
                   context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    def cmd() -> None:
        raise UserError(f"'autoencoded {name}' is not available in this version yet")

    return cmd


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="autoencoded")
def cli() -> None:
    """autoencoded: train a VAE-GAN on a film and perform live with its memory of it."""


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors become one line on stderr and exit code 2; Ctrl-C, SIGTERM and SIGHUP
    exit 130. Run as the command (argv None), the process ends here when a thread is still inside native
    code (autoencoded.shutdown), with the same status."""
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
        click.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except click.exceptions.Abort:
        _say_interrupted()
        return signals.INTERRUPTED_EXIT
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except KeyboardInterrupt:
        _say_interrupted()
        return signals.INTERRUPTED_EXIT
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except Exception as exc:  # a bug, not bad input: still one line unless debugging
        if debug:
            raise
        click.echo(f"internal error: {type(exc).__name__}: {exc} (set AUTOENCODED_DEBUG=1 for a traceback)",
                   err=True)
        return 1
    return code if isinstance(code, int) else 0


def _say_interrupted() -> None:
    try:
        click.echo("interrupted", err=True)
    except OSError:  # after SIGHUP the terminal may be gone
        pass


if __name__ == "__main__":
    sys.exit(main())
