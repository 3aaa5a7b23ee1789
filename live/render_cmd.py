"""`autoencoded render INPUT OUTPUT`: the offline render (see live/render.py)."""

from __future__ import annotations

from pathlib import Path

import click

from autoencoded.errors import UserError
from autoencoded.live.control.options import ControlsCommand
from autoencoded.live.engines import backend_choices, backend_help
from autoencoded.media.framing import CROP_MODES
from autoencoded.sizes import VIDEO_SIZE


@click.command("render", cls=ControlsCommand, controls=("noise", "memory", "noise/seed"), flags={"noise/seed": "--seed"},
               after="backend")
@click.argument("input", metavar="INPUT")
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--model", "model", default=None, metavar="MODEL",
              help="Model pack folder, .safetensors checkpoint or run folder (default: the bundled demo model).")
@click.option("--backend", default="auto", show_default=True,
              type=click.Choice(backend_choices()), help=backend_help())
@click.option("--batch", default=8, show_default=True, type=click.IntRange(1, 256), help="Frames per engine call.")
@click.option("--side-by-side", is_flag=True, help="Put the input on the left, the model's frame on the right.")
@click.option("--size", "--upscale", "size", default=None, type=VIDEO_SIZE, metavar="WxH",
              help="Size of the whole output frame, both pictures together with --side-by-side (default: the "
                   "model's size, twice as wide side by side). A picture keeps the model's aspect: black bars "
                   "fill the rest. --upscale is the old name.")
@click.option("--crop", default="auto", show_default=True, type=click.Choice(CROP_MODES),
              help="How the film's picture becomes the model's: auto trims black bars, then crops the centre "
                   "if that cuts at most 10% of the picture, else fits it whole; center crops the centre; "
                   "fit keeps it whole (black bars); none stretches. The first line says what was done.")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option("--preset", default=None, metavar="NAME|FILE", help="A preset's [params] and [[mod]] routes.")
@click.option("--mod", "mods", multiple=True, metavar="SIGNAL:CONTROL:AMOUNT[:ATTACK[:RELEASE]]",
              help="Modulate a control from the film's soundtrack, e.g. audio.onset:noise:1; repeatable.")
def render(input: str, output: Path, model: str | None, backend: str, controls: dict[str, float | int], batch: int,
           side_by_side: bool, size: tuple[int, int] | None, crop: str, overwrite: bool, preset: str | None,
           mods: tuple[str, ...]) -> None:
    """Reconstruct every frame of INPUT (a video file, or 'demo') through the model into OUTPUT
    (.mp4, .mkv, .mov or .avi), keeping its frame rate, frame count and audio."""
    from autoencoded.live.control.modulation import mod_option
    from autoencoded.live.control.params import ParamStore
    from autoencoded.live.control.presets import load_preset
    from autoencoded.live.engines import open_engine
    from autoencoded.live.render import render as do_render
    from autoencoded.media.writers import check_output_path

    the_preset = load_preset(preset) if preset else None
    routes = [*((the_preset.mods or []) if the_preset else []), *(mod_option(m) for m in mods)]
    store = ParamStore()
    if the_preset is not None:  # the preset's values, then the control options given on the command line
        store.update(the_preset.params)
    store.update(controls)
    if input != "demo" and not Path(input).is_file():
        raise UserError(f"{input}: no such video file")
    check_output_path(output)  # a folder that is not there, a name too long: said before the model loads
    if output.exists() and not overwrite:
        raise UserError(f"{output} exists; pass --overwrite to replace it")
    engine = open_engine(model, backend=backend, log=click.echo, memory=True)
    try:
        if engine.memory is None and (store.peek().memory > 0 or any(r.target == "memory" for r in routes)):
            raise UserError("memory: this model has no usable memory bank (the line above says why), so the "
                            "render would not be what was asked; add one with `autoencoded memory MODEL FOOTAGE`")
        s = do_render(input, output, engine, batch=batch, side_by_side=side_by_side, size=size, crop=crop,
                      overwrite=overwrite, log=click.echo, params=store.snapshot(), mods=routes)
    finally:
        engine.close()
    audio = "with audio" if s["audio"] else "no audio"
    faults = f", {s['faults']} frames passed through after model faults" if s["faults"] else ""
    # a variable-rate film: its frames, and the frames they fill at the constant rate (held to their times)
    dropped = f", {s['dropped']} dropped" if s["dropped"] else ""
    frames = f"{s['frames']} frames" if s["written"] == s["frames"] else \
        f"{s['frames']} frames as {s['written']} (held to keep their times{dropped})"
    click.echo(f"wrote {s['output']}: {frames} {s['size']} @ {s['rate']} fps, {audio}, "
               f"{s['render_fps']:.1f} frames/s ({s['x_realtime']:.2f}x real time){faults}")
