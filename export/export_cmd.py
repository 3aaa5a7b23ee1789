"""`autoencoded export RUN|CHECKPOINT -o MODEL`: write the ONNX model pack, optionally verify it and
build TensorRT engines for this machine's GPU."""

from __future__ import annotations

from pathlib import Path

import click

from autoencoded.errors import UserError
from autoencoded.export.memory_cmd import max_pack_bytes


@click.command("export")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("-o", "--output", "output", required=True, type=click.Path(path_type=Path),
              help="Model pack folder to write.")
@click.option("--which", type=click.Choice(["best", "latest"]), default="best", show_default=True,
              help="Which checkpoint of a run folder.")
@click.option("--verify", is_flag=True, help="Compare torch and ONNX Runtime on real frames; fail above tolerance.")
@click.option("--frames", "frames", type=click.Path(path_type=Path), default=None,
              help="Video file or prepared dataset whose frames --verify (and --tensorrt) use "
                   "(default: synthetic structured frames).")
@click.option("--tensorrt", is_flag=True, help="Also build FP16 TensorRT engines for this GPU into the engine cache.")
@click.option("--max-batch", type=click.IntRange(1, 1024), default=16, show_default=True,
              help="Largest batch the TensorRT engines accept.")
@click.option("--overwrite", is_flag=True, help="Replace an existing model pack.")
@max_pack_bytes
def export(source: Path, output: Path, which: str, verify: bool, frames: Path | None, tensorrt: bool,
           max_batch: int, overwrite: bool, max_pack_bytes: int) -> None:
    """Export a training run or checkpoint to an ONNX model pack."""
    if tensorrt:
        from autoencoded.live.engines import tensorrt_unavailable
        reason = tensorrt_unavailable()
        if reason:
            raise UserError(f"--tensorrt cannot run: {reason}")
    from autoencoded.export.onnx_export import export_checkpoint
    out, _ = export_checkpoint(source, output, which=which, overwrite=overwrite, verify=verify, frames=frames,
                               log=click.echo, max_pack_bytes=max_pack_bytes)
    click.echo(f"wrote model pack {out}")
    if tensorrt:
        from autoencoded.live.engines.pack import read_pack
        from autoencoded.live.engines.parity import load_frames
        from autoencoded.live.engines.tensorrt_backend import TensorRTEngine
        pack = read_pack(out)
        imgs, where = load_frames(frames, pack.width, pack.height)
        with TensorRTEngine(pack, max_batch=max_batch, log=click.echo, parity_frames=imgs) as engine:
            click.echo(f"tensorrt engines ready: {engine.name} (parity on {where})")
