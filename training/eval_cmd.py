"""The `autoencoded eval` command: scores a model pack or a run on footage, beside the baselines."""

from __future__ import annotations

import json
from pathlib import Path

import click

from autoencoded.errors import UserError


@click.command(name="eval")
@click.argument("model", type=click.Path(path_type=str))
@click.argument("footage", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--json", "json_path", default=None, type=click.Path(dir_okay=False, path_type=str),
              help="Also write every figure to this JSON file.")
@click.option("--limit", default=0, show_default=True, type=click.IntRange(min=0),
              help="Evaluate the first N frames of each footage only (0 = all).")
@click.option("--batch", default=16, show_default=True, type=click.IntRange(1, 256), help="Frames a batch.")
@click.option("--backend", default="auto", show_default=True,
              type=click.Choice(["auto", "tensorrt", "onnxruntime", "torch"]),
              help="Inference backend (a run or checkpoint always runs on torch).")
@click.option("--which", default="best", show_default=True, type=click.Choice(["best", "latest"]),
              help="Checkpoint of a run folder.")
def eval_(model, footage, json_path, limit, batch, backend, which) -> None:
    """Reconstruct FOOTAGE (prepared datasets or videos) with MODEL (a pack, a run or a checkpoint),
    decoding the mean, and print PSNR and SSIM beside the 16x9 thumbnail and a sigma-4 blur, the palette
    transfer toward the training frames, and how far the output follows the input's motion."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from autoencoded.live.engines import open_engine, resolve_model
    from autoencoded.training import evaluation

    kind, path = resolve_model(model)
    if json_path and Path(json_path).is_dir():
        raise UserError(f"--json {json_path}: is a folder")
    console = Console()
    engine = open_engine(model, backend=backend, which=which, log=lambda m: console.print(escape(str(m))))
    palette = evaluation.model_palette(kind, path)
    results = []
    try:
        for spec in footage:
            fo = evaluation.open_footage(spec, engine.width, engine.height, limit, batch)
            results.append(evaluation.evaluate(engine, fo, palette))
    finally:
        engine.close()
    for r in results:
        t = Table(title=escape(f"{r['footage']}: {r['frames']} frames at {engine.width}x{engine.height}"))
        t.add_column("")
        t.add_column("PSNR dB", justify="right")
        t.add_column("SSIM", justify="right")
        for name, s in r["scores"].items():
            t.add_row(name, f"{s['psnr_db']:.2f}", f"{s['ssim']:.3f}")
        console.print(t)
        console.print(f"model - thumbnail: {r['psnr_minus_thumb_db']:+.2f} dB")
        m = r["motion"]
        ratio = f"{m['ratio']:.2f}" if m["ratio"] is not None else "n/a"
        follow = ", ".join(f"{name} {v:.2f}" for name, v in m["baseline_ratios"].items() if v is not None)
        console.print(f"motion (mean frame-to-frame change, grey levels): input {m['inputs']:.2f}, "
                      f"output {m['outputs']:.2f}, ratio {ratio}"
                      + (f" (copies that follow every frame at their sharpness: {follow})" if follow else ""))
        p = r["palette"]
        if p is None:
            console.print("palette: the model records no training histogram (exported by an older version)")
        else:
            console.print(f"palette distance to the training frames (Bhattacharyya): inputs "
                          f"{p['inputs_to_training']:.3f}, outputs {p['outputs_to_training']:.3f} -> "
                          f"{'transfers the palette' if p['transfer'] else 'no palette transfer'}")
    if json_path:
        from autoencoded.fileio import atomic_write_bytes

        # JSON has no infinity (a perfect PSNR): it becomes null
        doc = {"model": str(path), "kind": kind, "engine": engine.name,
               "results": json.loads(json.dumps(results), parse_constant=lambda _: None)}
        try:
            atomic_write_bytes(json_path, (json.dumps(doc, indent=2) + "\n").encode())
        except OSError as exc:
            raise UserError(f"--json {json_path}: cannot write ({exc.strerror or exc})") from None
