"""`autoencoded bench`: inference speed of every available backend, as a table and a JSON file.

With no --model, each architecture is exported on the fly (randomly initialised, 256x144 by default)
into a temp folder: the speed of a network does not depend on its weights.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from pathlib import Path

import click

from autoencoded.errors import UserError, one_line
from autoencoded.fileio import atomic_write_bytes, check_writable, write_failed
from autoencoded.live.engines.backends import AUTO, BACKENDS, backend_help
from autoencoded.numbers import Finite
from autoencoded.sizes import MODEL_SIZE

ALL = "all"  # --backend all: every registered backend in turn


def _machine() -> dict:
    import torch
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "gpu": gpu, "python": platform.python_version(),
            "torch": torch.__version__}


def _models(model: Path | None, archs: tuple[str, ...], size: tuple[int, int], tmp: Path, log) -> list[dict]:
    """-> [{"arch", "pack", "checkpoint", "gflops"}]: what each backend can open."""
    import torch

    from autoencoded.export.onnx_export import export_checkpoint
    from autoencoded.live.engines import resolve_model
    from autoencoded.live.engines.pack import read_meta
    from autoencoded.training.model import AutoEncoder, ModelConfig, count_flops, count_params
    from autoencoded.training.weights import save_weights

    if model is not None:
        kind, path = resolve_model(model)
        if kind == "pack":
            meta = read_meta(path)
            src = meta.get("source_checkpoint")
            return [{"arch": meta.get("arch", "?"), "pack": path, "checkpoint": None, "gflops": None,
                     "params_m": None, "torch_source": bool(src and Path(src).is_file())}]
        pack = tmp / "pack"
        export_checkpoint(path, pack, log=lambda s: None)
        meta = read_meta(pack)
        return [{"arch": meta.get("arch", "?"), "pack": pack, "checkpoint": path, "gflops": None, "params_m": None}]
    out = []
    for arch in archs:
        torch.manual_seed(0)
        try:
            cfg = ModelConfig.preset(arch, width=size[0], height=size[1])
        except ValueError as exc:
            raise UserError(f"--size {size[0]}x{size[1]}: {exc}") from None
        ae = AutoEncoder(cfg).eval()
        flops = count_flops(ae, torch.zeros(1, 3, cfg.height, cfg.width))
        ckpt = tmp / f"{arch}.safetensors"
        save_weights(ckpt, cfg, ae.state_dict())
        log(f"exporting a randomly initialised {arch} at {cfg.width}x{cfg.height} for the benchmark")
        export_checkpoint(ckpt, tmp / f"{arch}-pack", log=lambda s: None)
        out.append({"arch": arch, "pack": tmp / f"{arch}-pack", "checkpoint": ckpt, "gflops": flops / 1e9,
                    "params_m": count_params(ae) / 1e6})
    return out


def _backends(choice: str) -> list[str]:
    return list(BACKENDS) if choice == ALL else [choice]


@click.command("bench")
@click.option("--model", type=click.Path(path_type=Path), default=None,
              help="Model pack, checkpoint or run folder (default: both architectures, random weights).")
@click.option("--backend", type=click.Choice([AUTO, ALL, *BACKENDS]), default=ALL, show_default=True,
              help=f"{ALL}: every backend, one after the other. {backend_help()}")
@click.option("--arch", "archs", multiple=True, type=click.Choice(["lite", "broad2016"]),
              help="Architectures to measure without --model (repeatable; default both).")
@click.option("--size", default="256x144", show_default=True, type=MODEL_SIZE, help="Model size without --model.")
@click.option("--seconds", type=Finite(0.05, 600), default=3.0, show_default=True,
              help="Seconds per measurement.")
@click.option("--max-batch", type=click.IntRange(1, 1024), default=64, show_default=True)
@click.option("--threads", "thread_counts", multiple=True, type=click.IntRange(1, 256),
              help="CPU threads of onnxruntime on the CPU (repeatable; default: live's setting, every core but "
                   "one, and every core).")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Write results here.")
def bench(model: Path | None, backend: str, archs: tuple[str, ...], size: str, seconds: float, max_batch: int,
          thread_counts: tuple[int, ...], json_path: Path | None) -> None:
    """Measure inference speed of every available backend (latency at batch 1, throughput at the best batch)."""
    from rich.console import Console

    from autoencoded.live.engines.ort_backend import cpu_threads, physical_cores

    console = Console(width=None if os.isatty(1) else 150)
    if json_path is not None:  # said now, not after minutes of measuring
        if json_path.is_dir():
            raise UserError(f"--json {json_path}: is a folder, expected a file name")
        check_writable(json_path.parent, "the results")
    archs = archs or ("lite", "broad2016")
    measure = _Measure(strict=backend != ALL, seconds=seconds, max_batch=max_batch, console=console,
                       # live leaves a core to the rest of the show; the whole CPU is what the model can do alone
                       cpu_settings=list(dict.fromkeys(thread_counts or (cpu_threads(), physical_cores()))))
    with tempfile.TemporaryDirectory(prefix="autoencoded-bench-") as tmp:
        results = [row for m in _models(model, archs, size, Path(tmp), console.print)
                   for name in _backends(backend) for row in measure(m, name)]
    console.print(_table(results))
    if json_path is not None:
        doc = {"machine": _machine(), "seconds": seconds, "results": results}
        try:
            atomic_write_bytes(json_path, (json.dumps(doc, indent=2) + "\n").encode())
        except OSError as exc:  # a disk that filled up while measuring
            raise write_failed(json_path, exc, "the results") from None
        console.print(f"wrote {json_path}", highlight=False)


class _Measure:
    """One model on one backend -> its result rows: one per CPU thread count where the backend takes them
    (a GPU engine has no CPU pool: measured once), else one. A backend that cannot run the model is one
    "skipped" row, or, when it was asked for by name (strict), a UserError."""

    def __init__(self, strict: bool, seconds: float, max_batch: int, console, cpu_settings: list[int | None]) -> None:
        self.strict, self.seconds, self.max_batch, self.console = strict, seconds, max_batch, console
        self.cpu_settings = cpu_settings
        self.batches = tuple(b for b in (1, 4, 8, 16, 32, 64, 128, 256, 512, 1024) if b <= max_batch)

    def skipped(self, m: dict, name: str, why: str, short: str | None = None) -> dict:
        if self.strict:
            raise UserError(why)
        return {"arch": m["arch"], "backend": name, "skipped": short or why}

    def __call__(self, m: dict, name: str) -> list[dict]:
        from rich.markup import escape

        from autoencoded.live.engines import open_engine
        from autoencoded.live.engines.base import EngineFault
        from autoencoded.live.engines.bench import latency, throughput
        from autoencoded.live.engines.ort_backend import CPU_EP

        entry = BACKENDS.get(name)  # None: auto
        runs_checkpoints = entry is not None and entry.checkpoints
        target = m["checkpoint"] if runs_checkpoints and m["checkpoint"] else m["pack"]
        if runs_checkpoints and not m["checkpoint"] and not m.get("torch_source"):
            return [self.skipped(m, name, f"{m['pack']}: the {name} backend needs the source checkpoint, not found",
                                 short="no source checkpoint")]
        rows: list[dict] = []
        for threads in self.cpu_settings if entry is None or entry.threads else [None]:
            try:
                engine = open_engine(target, name, log=lambda s: self.console.print(escape(s), highlight=False),
                                     max_batch=self.max_batch, threads=threads)
            except Exception as exc:  # a UserError, or an engine that fails to build (TensorRT, CUDA)
                why = str(exc) if isinstance(exc, UserError) else \
                    f"the {name} backend failed to load: {one_line(exc, typed=True)}"
                return [*rows, self.skipped(m, name, why)]
            cpu_pool = engine.threads if getattr(engine, "provider", None) == CPU_EP else None
            with engine:
                self.console.print(f"measuring {m['arch']} on {escape(engine.name)} ...", highlight=False)
                try:
                    lat = latency(engine, self.seconds)
                    thr = throughput(engine, self.seconds, self.batches)
                except EngineFault as exc:  # NaN, or another picture than the pack declares
                    return [*rows, self.skipped(m, name, f"{target}: {exc}; nothing measured")]
            rows.append({"arch": m["arch"], "backend": name, "engine": engine.name, "threads": cpu_pool,
                         "width": engine.width, "height": engine.height, "gflops": m["gflops"],
                         "params_m": m["params_m"], "batch1": lat, "best": thr})
            if cpu_pool is None:
                break
        return rows


def _table(results: list[dict]):
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="autoencoded bench (reconstruct: preprocess + encode + decode + postprocess)")
    for col in ("arch", "backend", "engine", "GFLOPs", "p50 ms", "p99 ms", "fps @1", "best batch", "fps @best"):
        table.add_column(col, justify="left" if col in ("arch", "backend", "engine") else "right")
    for r in results:
        if "skipped" in r:
            table.add_row(r["arch"], r["backend"], f"[dim]skipped: {escape(r['skipped'])}[/dim]", *[""] * 6)
            continue
        gf = f"{r['gflops']:.2f}" if r["gflops"] else "-"
        table.add_row(r["arch"], r["backend"], escape(r["engine"]), gf, f"{r['batch1']['p50_ms']:.2f}",
                      f"{r['batch1']['p99_ms']:.2f}", f"{r['batch1']['fps']:.1f}", str(r["best"]["best_batch"]),
                      f"{r['best']['fps']:.1f}")
    return table
