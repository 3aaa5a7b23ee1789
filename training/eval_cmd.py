"""The `autoencoded eval` command: scores a model pack or a run on footage, beside the baselines."""

from __future__ import annotations

import json
from pathlib import Path

import click

from autoencoded.errors import UserError
from autoencoded.live.engines import backend_choices, backend_help

LEGEND = ("PSNR in dB; structure: luma correlation with the input at 32x18 (1 keeps its composition, 0 shows none of it); "
          "palette: CIELAB Gaussian W2 to the training frames (lower is closer to the film's colours); "
          "colour: Hasler-Suesstrunk colourfulness (0 is grey); motion: frame-to-frame change "
          "against the input's (the copies follow every frame at their sharpness); warp: mean absolute "
          "difference, 0-255, between output frames t and t+1 warped onto t along the input's optical flow "
          "(the input's own is what the flow's mistakes cost at full sharpness)")


DREAM_LEGEND = ("dream: the footage rendered again at live noise 0.5 and 1 (default drift and noise/max); change: "
                "mean |difference| from the noise-0 render, 0-255; sharpness: at noise 1, over the film's own frames' "
                "median (above 1 is static, not a picture); palette at 1: its CIELAB W2 to the film's colours; "
                "warp at 0.5 against noise 0's (above 2 boils); learned: how much swapping a frame's learned "
                "latent entries for those of a frame half the footage away changes the output, 0-255")


def _dream_line(r: dict) -> str:
    d = r["dream"]
    model = r["scores"]["model"]
    sharp = (f"{d['sharpness_ratio']:.2f}x the film's (at 0 {d['sharpness_ratio_noise_0']:.2f}x)"
             if d["sharpness_ratio"] is not None
             else f"{d['sharpness_noise_1']:.0f} (at 0 {d['sharpness_noise_0']:.0f}; the film's is not recorded: "
                  "--palette FILM)")
    return (f"dream: change {d['change']['0.5']:.1f} at noise 0.5, {d['change']['1.0']:.1f} at 1; sharpness at 1 "
            f"{sharp}; palette at 1 {_figure(d['palette_w2_noise_1'], '.1f')} "
            f"(at 0 {_figure(model['palette_w2'], '.1f')}); warp at 0.5 {_figure(d['warp_error_noise_05'], '.2f')} "
            f"(at 0 {_figure(d['warp_error_noise_0'], '.2f')}); learned {_figure(d['learned_share'], '.1f')}")


def _figure(v: float | None, fmt: str) -> str:
    return "n/a" if v is None else format(v, fmt)


def _table(r: dict, width: int, height: int):
    from rich.markup import escape
    from rich.table import Table

    # fits 80 columns: no outer border, and the blur's row named without "gaussian"
    t = Table(title=escape(f"{r['footage']}: {r['frames']} frames at {width}x{height}"), show_edge=False)
    for col in ("", "PSNR", "SSIM", "structure", "palette", "colour", "motion", "warp"):
        t.add_column(col, justify="right" if col else "left", no_wrap=not col)
    i = r["inputs"]
    t.add_row("input", "", "", "", _figure(i["palette_w2"], ".1f"), _figure(i["colourfulness"], ".1f"),
              "1.00", _figure(i["warp_error"], ".2f"))
    for name, s in r["scores"].items():
        t.add_row(name.removeprefix("gaussian "), f"{s['psnr_db']:.2f}", f"{s['ssim']:.3f}", f"{s['structure']:.3f}",
                  _figure(s["palette_w2"], ".1f"), f"{s['colourfulness']:.1f}", _figure(s["motion_ratio"], ".2f"),
                  _figure(s["warp_error"], ".2f"))
    return t


@click.command(name="eval")
@click.argument("model", type=click.Path(path_type=str))
@click.argument("footage", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--json", "json_path", default=None, type=click.Path(dir_okay=False, path_type=str),
              help="Also write every figure to this JSON file.")
@click.option("--limit", default=0, show_default=True, type=click.IntRange(min=0),
              help="Evaluate the first N frames of each footage only (0 = all).")
@click.option("--batch", default=16, show_default=True, type=click.IntRange(1, 256), help="Frames a batch.")
@click.option("--backend", default="auto", show_default=True,
              type=click.Choice(backend_choices()),
              help=f"{backend_help()} A run or checkpoint always runs on torch.")
@click.option("--which", default="best", show_default=True, type=click.Choice(["best", "latest"]),
              help="Checkpoint of a run folder.")
@click.option("--palette", "palette_spec", default=None, type=click.Path(path_type=str),
              help="Measure the palette against this footage's colours (the training film, as a video or a "
                   "prepared dataset) instead of those the model recorded.")
@click.option("--dream/--no-dream", default=True, show_default=True,
              help="Also render at noise 0.5 and 1 and score what the noise does (about 3x the time).")
def eval_(model, footage, json_path, limit, batch, backend, which, palette_spec, dream) -> None:
    """Reconstruct FOOTAGE (prepared datasets or videos) with MODEL (a pack, a run or a checkpoint),
    decoding the mean, and print beside the 16x9 thumbnail and a sigma-4 blur: PSNR, SSIM, structure (luma
    correlation with the input at 32x18), palette (CIELAB Gaussian W2 to the training frames),
    colourfulness, motion follow and the temporal warping error; and the dream: what live noise 0.5 and 1
    change, whether it stays a picture in the film's colours, and how much the learned latent carries."""
    from rich.console import Console
    from rich.markup import escape

    from autoencoded.live.dream import DreamTally
    from autoencoded.live.engines import open_engine, resolve_model
    from autoencoded.training import evaluation

    kind, path = resolve_model(model)
    if json_path and Path(json_path).is_dir():
        raise UserError(f"--json {json_path}: is a folder")
    console = Console()
    engine = open_engine(model, backend=backend, which=which, log=lambda m: console.print(escape(str(m))))
    results = []
    try:
        if palette_spec is not None:
            palette, missing = evaluation.footage_palette(palette_spec, engine.width, engine.height, batch), ""
        else:
            palette, missing = evaluation.model_palette(kind, path)
        for spec in footage:
            fo = evaluation.open_footage(spec, engine.width, engine.height, limit, batch)
            tally = (DreamTally(engine.encode, engine.decode, engine.latent_plan(), engine.z_dim, fo.total or 0)
                     if dream else None)
            results.append(evaluation.evaluate(engine, fo, palette, missing, dream=tally))
    finally:
        engine.close()
    for r in results:
        console.print(_table(r, engine.width, engine.height))
        console.print(f"model - thumbnail: {r['psnr_minus_thumb_db']:+.2f} dB")
        p = r["palette"]
        if p is None:
            console.print(f"palette: {escape(r['palette_missing'])}")
        else:
            console.print(f"palette (CIELAB W2 to {escape(p['reference'])}): inputs {p['inputs_w2']:.1f} -> outputs "
                          f"{p['outputs_w2']:.1f}: {'closer to' if p['transfer'] else 'further from'} the film's colours")
        if r["dream"] is not None:
            console.print(_dream_line(r))
    if results:
        console.print(LEGEND)
        if dream:
            console.print(DREAM_LEGEND)
    if json_path:
        from autoencoded.fileio import atomic_write_bytes

        # JSON has no infinity (a perfect PSNR): it becomes null
        doc = {"model": str(path), "kind": kind, "engine": engine.name,
               "results": json.loads(json.dumps(results), parse_constant=lambda _: None)}
        try:
            atomic_write_bytes(json_path, (json.dumps(doc, indent=2) + "\n").encode())
        except OSError as exc:
            raise UserError(f"--json {json_path}: cannot write ({exc.strerror or exc})") from None
