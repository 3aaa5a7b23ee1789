"""`autoencoded memory MODEL FOOTAGE`: give a model pack the memory bank of its film (export/memory_build.py),
or replace the one it has (--overwrite). For packs made before memory banks, and packs exported where the
run's dataset was not at hand."""

from __future__ import annotations

from pathlib import Path

import click

from autoencoded.errors import UserError
from autoencoded.live.engines.memory_bank import MAX_PACK_BYTES
from autoencoded.numbers import Finite

# export and memory both build a bank, so both take the pack's size budget, with one wording; the command
# gets it in bytes, as the bank's budget is counted
max_pack_bytes = click.option(
    "--max-pack-mb", "max_pack_bytes", type=Finite(min=0, max=MAX_PACK_BYTES / 1e6, min_open=True),
    default=MAX_PACK_BYTES / 1e6, show_default=True, callback=lambda ctx, param, mb: int(mb * 1e6),
    help="Keep the whole pack, ONNX files and memory bank, within this many MB (10^6 bytes; the default is the "
         "most): the bank keeps fewer of the film's frames (a coarser dedupe) until it fits.")


@click.command("memory")
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("footage", type=click.Path(path_type=Path))
@click.option("--overwrite", is_flag=True, help="Replace the memory bank the pack has.")
@max_pack_bytes
def memory(model: Path, footage: Path, overwrite: bool, max_pack_bytes: int) -> None:
    """Remember FOOTAGE (the prepared dataset the model was trained on, or its video) in the model pack
    MODEL: every frame through the pack's encoder, deduplicated, kept beside the model."""
    from autoencoded.export.memory_build import build_bank
    from autoencoded.export.onnx_export import update_meta
    from autoencoded.fileio import Claim, atomic_write_bytes, check_writable, write_failed
    from autoencoded.live.engines.memory_bank import MEMORY_FILE, META_KEY
    from autoencoded.live.engines.pack import read_meta

    read_meta(model)  # not a pack: said before anything is claimed
    # the pack's name, as export holds it: a second `memory`, or an export, into this pack meanwhile is refused
    with Claim(model, "a model pack"):  # the words the refusal says, as for export
        meta = read_meta(model)
        if meta.get(META_KEY) is not None and not overwrite:
            raise UserError(f"{model} already has a memory bank; pass --overwrite to replace it")
        check_writable(model, "the model pack")
        bank = model / MEMORY_FILE
        before = bank.read_bytes() if bank.is_file() else None  # put back if model.json cannot follow the bank
        try:
            record = build_bank(model, footage, log=click.echo, budget=max_pack_bytes)
            try:
                update_meta(model, **{META_KEY: record})
            except OSError:
                if before is None:
                    bank.unlink(missing_ok=True)
                else:
                    atomic_write_bytes(bank, before)
                raise
        except OSError as exc:
            raise write_failed(model, exc, "the memory bank") from None
    click.echo(f"wrote the memory bank of {model}: {record['count']} frames of {footage}")
