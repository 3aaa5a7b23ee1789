"""The `autoencoded prepare` command: options, progress bar and summary around autoencoded.training.prepare."""

from __future__ import annotations

import click

from autoencoded.errors import UserError
from autoencoded.numbers import FINITE
from autoencoded.sizes import MODEL_SIZE


@click.command(name="prepare")
@click.argument("videos", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=str))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=str),
              help="Dataset folder to write (frames.npy + dataset.json).")
@click.option("--size", default="256x144", show_default=True, type=MODEL_SIZE,
              help="Frame size WIDTHxHEIGHT, both multiples of 16 (the model's input size).")
@click.option("--every", default=1, show_default=True, type=int, help="Keep every Nth frame.")
@click.option("--dedupe", default=None, type=FINITE,
              help="Drop a frame whose mean absolute difference (0-255, on a 32x18 thumbnail) from the last "
                   "kept frame is below this, e.g. 2. Off by default.")
@click.option("--crop", default="auto", show_default=True, type=click.Choice(["auto", "center", "fit", "none"]),
              help="auto: remove letterbox/pillarbox bars, then crop the centre to the frame's aspect; "
                   "center: crop the centre; fit: keep the whole picture, pad with black; none: stretch.")
@click.option("--overwrite", is_flag=True, help="Replace an existing dataset in the output folder.")
@click.option("--max-frames", default=None, type=int, help="Stop after keeping this many frames.")
def prepare(videos, output, size, every, dedupe, crop, overwrite, max_frames) -> None:
    """Turn one or more video files (concatenated in order) into a training dataset."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from autoencoded.training import prepare as work

    dims = size
    err = Console(stderr=True)
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("frames"),
               TimeRemainingColumn()]
    with Progress(*columns, console=err, disable=not err.is_terminal, transient=False) as bar:
        task = bar.add_task("decoding", total=None)

        def progress(done: int, total: int | None, name: str) -> None:
            bar.update(task, completed=done, total=total, description=name)

        meta, s = work.prepare(videos, output, size=dims, every=every, dedupe=dedupe, crop=crop,
                               overwrite=overwrite, max_frames=max_frames, progress=progress)
    out = click.echo
    for source in meta["sources"]:
        for line in source.get("reframed") or []:
            out(f"{source['path']}: the picture changes size {line}")
    out(f"{output}: {s.kept} frames {dims[0]}x{dims[1]} kept of {s.decoded} decoded "
        f"({s.dropped_every} skipped by --every, {s.dropped_dedupe} dropped as duplicates)")
    out(f"source {s.duration_s:.1f} s of video, frames.npy {s.bytes / 1e6:.1f} MB, "
        f"{s.seconds:.1f} s at {s.fps:.0f} frames/s = {s.realtime:.1f}x real time")
    if s.partial:
        raise UserError(f"{s.partial[0]}; the dataset in {output} is marked partial (complete=false)"
                        + (f" and {len(s.partial) - 1} more source(s) stopped early" if len(s.partial) > 1 else ""))
