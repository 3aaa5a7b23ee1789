"""`autoencoded train DATASET -o RUN`: the command line of the trainer."""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
from pathlib import Path

import click

from autoencoded.documents import parse_json
from autoencoded.errors import UserError
from autoencoded.fileio import LOCK_INSIDE
from autoencoded.numbers import FINITE, Finite
from autoencoded.sizes import MAX_Z_DIM, MODEL_SIZE  # MAX_Z_DIM: model packs are held to it too
from autoencoded.training import archs
from autoencoded.training.config import LR_SCHEDULES
from autoencoded.training.model import ModelConfig

RUN_ITEMS = ("checkpoints", "samples", "logs", "metrics.jsonl", "config.json", "dataset_palette.json")
# each option's name is its TrainConfig field's (dashes for underscores)


def _defaults(field: str, fallback: object = None) -> str:
    """'lite 2e-3, broad2016 2e-4': an option's per-architecture defaults, for its help; an architecture that
    names no value shows `fallback` (a loss knob's own default), or is left out when there is none."""
    values = [(name, a.training().get(field, fallback)) for name, a in archs.ARCHS.items()]
    return ", ".join(f"{name} {v:g}" if isinstance(v, float) else f"{name} {v}" for name, v in values if v is not None)


def _model_defaults(field: str) -> str:
    """'lite 0, broad2016 200': a network field's per-architecture defaults, for an option's help."""
    return ", ".join(f"{name} {ModelConfig.fields_of(name)[field]}" for name in archs.ARCHS)


# changing these on --resume would change the model: refused
FIXED_ON_RESUME = ("arch", "z_dim", "layout", "layout_scale")


MAX_SEED = 2**63 - 1  # torch seeds are 64-bit
# float options that must be finite and 0 or more when given (None: the architecture's default), beside the
# loss terms' weights (training/losses.py)
FLOAT_FIELDS = ("epochs", "lr", "lr_dis", "clip_grad", "noise_start", "noise_end")


def float_options() -> tuple[str, ...]:
    from autoencoded.training import losses

    return FLOAT_FIELDS + tuple(f for f, k in losses.knobs().items() if not k.switch)


def _arch_option() -> click.Option:
    return click.Option(["--arch"], type=click.Choice(archs.names()), default="lite", show_default=True,
                        help="Architecture (training/archs.py): its networks and its training defaults.")


def _knob_option(knob) -> click.Option:
    """A loss term's knob (training/losses.py) as a `train` option."""
    if knob.switch:
        return click.Option([knob.switch, knob.field], default=None, help=knob.help)
    return click.Option([knob.option], type=FINITE, default=None, help=f"{knob.help} ({_defaults(knob.field, knob.default)}).")


class TrainCommand(click.Command):
    """The options that registries declare are built when the command runs, so an architecture or a loss
    term registered after this module was imported (a plugin's, a test's) is an option all the same."""

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        from autoencoded.training import losses

        params = super().get_params(ctx)
        names = [p.name for p in params]
        at_out, at_ema = names.index("out") + 1, names.index("ema") + 1
        return [*params[:at_out], _arch_option(), *params[at_out:at_ema],
                *(_knob_option(k) for k in losses.knobs().values()), *params[at_ema:]]


def check_numbers(opts: dict) -> None:
    """nan, inf, negative or huge values: one line and exit 2 before anything is read or built."""
    for k in float_options():
        v = opts.get(k)
        if v is not None and not (math.isfinite(v) and v >= 0):
            raise UserError(f"--{k.replace('_', '-')} {v:g}: must be a finite number, 0 or more")
    if opts["z_dim"] is not None and not 1 <= opts["z_dim"] <= MAX_Z_DIM:
        raise UserError(f"--z-dim {opts['z_dim']}: must be between 1 and {MAX_Z_DIM}")
    if not 0 <= opts["seed"] <= MAX_SEED:
        raise UserError(f"--seed {opts['seed']}: must be between 0 and 2^63-1")


def check_counts(opts: dict, given: set[str]) -> None:
    """Counts that train nothing or cannot train: --steps 0 and --epochs 0 (which used to mean "the default,
    one epoch" even when typed), and a batch that leaves a process fewer than 2 frames a step (BatchNorm
    needs two values per channel; 0 divided by zero)."""
    for k, what in (("steps", "at least 1"), ("epochs", "more than 0")):
        if k in given and opts[k] == 0:
            raise UserError(f"--{k} 0: must be {what} (leave it out for the default, one epoch)")
    if opts["batch"] is not None:
        parts = max(1, int(os.environ.get("WORLD_SIZE", "1") or 1)) * max(1, opts["accum"])
        if opts["batch"] < 2 * parts:
            each = f" for each of processes x --accum ({parts})" if parts > 1 else ""
            raise UserError(f"--batch {opts['batch']}: must be at least {2 * parts}: 2 frames a step{each} "
                            "(BatchNorm needs two)")


def _check_run(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse what cannot be done with the run folder, touching nothing (every process runs this)."""
    if resume and overwrite:
        raise UserError("--resume and --overwrite exclude each other")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    if resume:
        if not (out / "config.json").is_file():
            raise UserError(f"{out}: no training run to resume (config.json missing)")
        return
    held = [p for p in out.iterdir() if p.name != LOCK_INSIDE] if out.is_dir() else []  # not the run's claim
    if held:
        if not overwrite:
            raise UserError(f"{out}: run folder exists; pass --resume to continue it or --overwrite to start over")
        unknown = [p.name for p in held if p.name not in RUN_ITEMS]
        if unknown:
            raise UserError(f"{out}: --overwrite refused, the folder holds files that are not part of a run "
                            f"({', '.join(sorted(unknown)[:3])})")


def _clear_run(out: Path) -> None:
    """--overwrite: delete the old run's items (only rank 0 does this, once every process has checked)."""
    for name in RUN_ITEMS:
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def _resolved_model_value(key: str, saved, value):
    """A model choice as the trainer resolves it for the run `saved`: no z_dim (or an old run's 0) and no
    layout (or layout scale) mean the architecture's default."""
    if (key == "z_dim" and not value) or (key in ("layout", "layout_scale") and value is None):
        from autoencoded.training.config import resolve
        return getattr(resolve(dataclasses.replace(saved, **{key: None})), key)
    return value


@click.command(name="train", cls=TrainCommand)
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("-o", "--out", required=True, type=click.Path(path_type=Path), help="Run folder to create.")
@click.option("--steps", type=int, default=0, help="Total optimisation steps.")
@click.option("--epochs", type=FINITE, default=0.0, help="Total epochs (instead of --steps); default 1.")
@click.option("--batch", type=int, default=None, help=f"Global batch ({_defaults('batch')}).")
@click.option("--accum", type=int, default=1, show_default=True, help="Micro-batches per step per process.")
@click.option("--lr", type=FINITE, default=None, help=f"Peak Adam lr of encoder and decoder ({_defaults('lr')}).")
@click.option("--lr-dis", type=FINITE, default=None, help=f"Discriminator lr ({_defaults('lr_dis')}).")
@click.option("--lr-schedule", type=click.Choice(LR_SCHEDULES), default=None,
              help=f"constant, or cosine decay over the run ({_defaults('lr_schedule')}).")
@click.option("--adversarial-start", type=Finite(0, 1), default=None,
              help=f"Fraction of the run before the discriminator joins ({_defaults('adversarial_start')}).")
@click.option("--ema", type=Finite(0, 1, max_open=True), default=None,
              help=f"Decay of the weight average used for evaluation and export, 0 = off ({_defaults('ema')}).")
@click.option("--augment/--no-augment", "augment", default=None,
              help="Show the film through other cameras: recomposed crops, flips and rotations, and inputs grey, "
                   "off-colour, blurred or noisy against the clean frame, so the model sees footage it never saw "
                   f"({_defaults('augment')}).")
@click.option("--augment-plain", type=Finite(0, 1), default=None,
              help=f"Fraction of each batch kept as the film's frames are ({_defaults('augment_plain')}).")
@click.option("--augment-degrade", type=Finite(0, 1), default=None,
              help=f"Fraction of the recomposed frames whose input is also degraded ({_defaults('augment_degrade')}).")
@click.option("--augment-grey", type=Finite(0, 1), default=None,
              help="Fraction of the degraded inputs made grey, so a greyscale camera comes out in the film's colours "
                   f"({_defaults('augment_grey')}).")
@click.option("--clip-grad", type=FINITE, default=0.0, help="Max gradient norm per network (0 = off).")
@click.option("--noise-start", type=FINITE, default=None, help=f"Prior std at the start ({_defaults('noise_start')}).")
@click.option("--noise-end", type=FINITE, default=None, help=f"Prior std at the end ({_defaults('noise_end')}).")
@click.option("--dream-share", type=Finite(0, 1), default=None,
              help="Fraction of each batch whose latent noise is an amount live plays, uniform from 0 to 1 "
                   f"(the decoder learns what the noise knob means) ({_defaults('dream_share', 0.0)}).")
@click.option("--noise-schedule", type=click.Choice(["linear", "cosine", "step"]), default="cosine",
              show_default=True)
@click.option("--sample-every", type=int, default=0, help="Steps between sample grids (default: as checkpoints).")
@click.option("--checkpoint-every", type=int, default=0, help="Steps between checkpoints (default 100).")
@click.option("--log-every", type=int, default=10, show_default=True)
@click.option("--keep", type=int, default=3, show_default=True, help="Checkpoints kept (plus the best).")
@click.option("--z-dim", type=int, default=None,
              help="Size of the learned latent code (" + _model_defaults("z_dim") + ").")
@click.option("--layout/--no-layout", "layout", default=None,
              help="Carry the input's luma at the decoder's bottom grid (16x9 at 256x144) in the latent, so footage "
                   "the model never saw keeps its composition while the film paints it (" + _model_defaults("layout")
                   + ").")
@click.option("--layout-scale", type=int, default=None,
              help="How many times finer than that bottom grid the layout is: 8 carries 128x72 at 256x144, read "
                   "by the decoder's second, third and fourth layers too, so more of the input's shape and "
                   "motion comes through (a power of two; " + _model_defaults("layout_scale") + ").")
@click.option("--size", "size", default=None, type=MODEL_SIZE, help="Expected WIDTHxHEIGHT (must match the dataset).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True,
              help="auto: an NVIDIA GPU, then Apple's GPU (MPS), then the CPU.")
@click.option("--compile", is_flag=True,
              help="torch.compile the networks, on CUDA (needs a C compiler for Triton: gcc or clang) or the CPU "
                   "(needs g++).")
@click.option("--balance/--no-balance", default=True, show_default=True, help="Equilibrium/margin rule.")
@click.option("--guard/--no-guard", default=True, show_default=True, help="Collapse guard with rollback.")
@click.option("--resume", is_flag=True, help="Continue the run in RUN from its latest checkpoint.")
@click.option("--overwrite", is_flag=True, help="Delete an existing run in RUN and start over.")
@click.option("--allow-partial", is_flag=True, help="Train on a dataset whose source stopped early (warns).")
@click.option("--progress/--no-progress", default=True, help="Show the progress bar.")
@click.pass_context
def train(ctx: click.Context, dataset: Path, out: Path, size: tuple[int, int] | None, resume: bool, overwrite: bool,
          progress: bool, **opts) -> None:
    """Train the VAE-GAN on a prepared DATASET; write checkpoints, samples and logs to RUN (-o)."""
    from rich.console import Console

    from autoencoded.training import distributed
    from autoencoded.training.checkpoints import RunClaim
    from autoencoded.training.loop import Trainer

    # soft_wrap: a log line stays one line in a log file (rich wraps at 80 columns off a terminal)
    console = Console(stderr=True, soft_wrap=True)
    progress = progress and console.is_terminal  # a log file gets the step lines, not a redrawn bar
    given = {k for k in opts if ctx.get_parameter_source(k) == click.core.ParameterSource.COMMANDLINE}
    check_options(opts, given)
    ds = _open_dataset(dataset, size, opts, console)
    run_claim = RunClaim(out)  # before the folder is checked: two trainers never both pass the check
    ctx.call_on_close(run_claim.release)
    _check_run(out, resume, overwrite)
    cfg = _run_config(dataset, out, ds, opts, given, resume)
    trainer = Trainer(cfg, ds, resume=resume, console=console, progress=progress)
    if resume and trainer.dist.main:
        console.print(f"resuming {out} from step {trainer.step} of {trainer.total} "
                      f"({trainer.ckpt.latest().name})", highlight=False)
    # the process group exists now: every process has checked the folder; rank 0 alone changes it
    distributed.barrier(trainer.dist)
    if trainer.dist.main:
        _write_run_folder(out, cfg, overwrite)
    distributed.barrier(trainer.dist)
    from autoencoded.training.data import DatasetChanged
    try:
        summary = trainer.run()
    except DatasetChanged as exc:
        # a step (or an evaluation) that cannot read its frames writes nothing: what was saved stays as it is
        latest = trainer.ckpt.latest()
        kept = f"its last checkpoint {latest.name} is kept" if latest else "it had saved no checkpoint"
        raise DatasetChanged(f"{exc}; training stopped at step {trainer.step}, {kept}; prepare the dataset "
                             f"again, then continue with --resume") from None
    if trainer.dist.main:
        _print_summary(summary, out)
    distributed.shutdown(trainer.dist)
    if summary["interrupted"]:
        click.echo(f"interrupted at step {summary['step']}: checkpoint saved; continue with "
                   f"'autoencoded train {dataset} -o {out} --resume'", err=True)
        raise click.exceptions.Exit(130)  # the command line's own way out (a SystemExit is a plugin's fault)


def check_options(opts: dict, given: set[str]) -> None:
    """Values no run can take: one line and exit 2 before anything is read or built."""
    from autoencoded.training.config import NOISE_SCHEDULES

    if opts["steps"] and opts["epochs"]:
        raise UserError("give --steps or --epochs, not both")
    for k in ("steps", "epochs", "batch", "accum", "keep", "sample_every", "checkpoint_every"):
        if opts[k] is not None and (opts[k] < 0 or (k == "accum" and opts[k] < 1)):
            raise UserError(f"--{k.replace('_', '-')} must be positive")
    check_counts(opts, given)
    if any(opts[k] is not None and not opts[k] >= 0 for k in ("noise_start", "noise_end")):
        raise UserError("--noise-start and --noise-end must be >= 0")
    check_numbers(opts)
    assert opts["noise_schedule"] in NOISE_SCHEDULES


def _open_dataset(dataset: Path, size: tuple[int, int] | None, opts: dict, console):
    """The dataset, if its frames fit the architecture (its stages halve both sides) and --size."""
    from autoencoded.training.data import open_dataset

    ds = open_dataset(dataset, allow_partial=opts["allow_partial"])
    if not ds.complete:
        console.print(f"[yellow]warning: {dataset} is partial (a source stopped early); training on its "
                      f"{len(ds)} frames[/]")
    multiple = ModelConfig.size_multiple(opts["arch"])
    if ds.width % multiple or ds.height % multiple:
        raise UserError(f"{dataset}: frames are {ds.width}x{ds.height}; both sides must divide by {multiple} "
                        "(prepare it again with --size, e.g. 256x144)")
    if size and size != (ds.width, ds.height):
        raise UserError(f"--size {size[0]}x{size[1]} does not match the dataset ({ds.width}x{ds.height})")
    return ds


def _run_config(dataset: Path, out: Path, ds, opts: dict, given: set[str], resume: bool):
    """The run's resolved TrainConfig: a new one from the options, or the saved one with the options given."""
    from autoencoded.training.config import TrainConfig, resolve

    where = dict(dataset=str(dataset), out=str(out), width=ds.width, height=ds.height)
    if not resume:
        if not opts["steps"] and not opts["epochs"]:
            opts = {**opts, "epochs": 1.0}
        return resolve(TrainConfig(**where, **opts))
    try:
        saved = TrainConfig.from_dict(parse_json((out / "config.json").read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(f"{out / 'config.json'}: unreadable ({exc})") from None
    for k in FIXED_ON_RESUME:
        if k not in given:
            continue
        was = _resolved_model_value(k, saved, getattr(saved, k))
        now = _resolved_model_value(k, saved, opts[k])
        if was != now:
            raise UserError(f"--resume: the run was trained with {k}={was}, not {now} (incompatible checkpoint)")
    changes = {k: opts[k] for k in given if k not in FIXED_ON_RESUME}
    if "steps" in changes:
        changes["epochs"] = 0.0
    elif "epochs" in changes:
        changes["steps"] = 0
    # the run folder is the one named now: a copied or moved run never writes into the original
    return resolve(dataclasses.replace(saved, **changes, **where))


def _write_run_folder(out: Path, cfg, overwrite: bool) -> None:
    try:
        if overwrite:
            _clear_run(out)
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out / "config.json")
    except OSError as exc:
        raise UserError(f"{out}: cannot write the run folder ({exc.strerror or exc})") from None


def _print_summary(s: dict, out: Path) -> None:
    from autoencoded.training.run_evaluation import EVAL_FRAMES

    ev = s["last_eval"] or {}
    first = s["first_recon_mse"]
    lines = [f"trained {s['steps_run']} steps in {s['seconds']:.1f} s ({s['samples_per_s']:.1f} samples/s); "
             f"step {s['step']}/{s['total']}"]
    if ev:
        start = f"{first:.4f} -> " if first is not None else ""
        lines.append(f"reconstruction mse (fixed batch, decode the mean): {start}{ev['recon_mse']:.4f} "
                     f"at step {ev['step']}; PSNR {ev['psnr']:.2f} dB ({ev['psnr_minus_thumb']:+.2f} vs the 16x9 "
                     f"thumbnail), SSIM {ev['ssim']:.3f} on {EVAL_FRAMES} frames")
    lines.append(f"balance skips: discriminator {s['skips']['dis']}, decoder GAN {s['skips']['dec_gan']}; "
                 f"rollbacks {s['rollbacks']}")
    lines.append(f"checkpoints: {out / 'checkpoints'} (latest {Path(s['latest']).name}, best {s['best']})")
    lines.append(f"samples: {out / 'samples'}   tensorboard --logdir {out / 'logs'}")
    for line in lines:
        click.echo(line)
