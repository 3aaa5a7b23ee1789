"""Training throughput (samples/s) at 256x144 for both architectures, on CPU and on CUDA when present.

    .venv/bin/python benchmarks/bench_train.py [--steps 5] [--batch 8] [--device cpu|cuda|all] [--compile]

Times full training steps of the real Trainer (encoder, decoder and discriminator updates, data read
from a memory-mapped dataset) after warm-up steps; evaluation and checkpoints are not included.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autoencoded.training.config import TrainConfig, resolve  # noqa: E402
from autoencoded.training.data import open_dataset  # noqa: E402
from autoencoded.training.loop import Trainer  # noqa: E402


def make_dataset(path: Path, n: int, w: int = 256, h: int = 144) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    frames = np.lib.format.open_memmap(path / "frames.npy", mode="w+", dtype=np.uint8, shape=(n, h, w, 3))
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    for i in range(n):
        frames[i] = np.roll(base, i * 3, axis=1)
    frames.flush()
    del frames
    (path / "dataset.json").write_text(json.dumps({"format": "autoencoded-dataset", "version": 1,
                                                   "complete": True, "frames": n, "width": w, "height": h}))
    return path


def bench(arch: str, device: str, batch: int, steps: int, warmup: int, compile_: bool, tmp: Path) -> float:
    n = max(batch * (steps + warmup + 1), 64)
    ds = make_dataset(tmp / f"ds-{n}", n)
    out = tmp / f"run-{arch}-{device}"
    out.mkdir()
    cfg = resolve(TrainConfig(dataset=str(ds), out=str(out), arch=arch, width=256, height=144,
                              steps=steps + warmup, batch=batch, device=device, compile=compile_, guard=False))
    tr = Trainer(cfg, open_dataset(ds), progress=False)
    for _ in range(warmup):
        tr.train_step()
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        tr.train_step()
    if device == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=0, help="default: 8 on CPU, 128 on CUDA")
    ap.add_argument("--device", default="all", choices=["all", "cpu", "cuda"])
    ap.add_argument("--arch", default="all", choices=["all", "lite", "broad2016"])
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    archs = ["lite", "broad2016"] if args.arch == "all" else [args.arch]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
          + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no CUDA"))
    print(f"{'arch':10} {'device':6} {'batch':>5} {'samples/s':>10} {'epoch of 170k frames':>22}")
    with tempfile.TemporaryDirectory() as tmp:
        for dev in devices:
            batch = args.batch or (8 if dev == "cpu" else 128)
            for arch in archs:
                sps = bench(arch, dev, batch, args.steps, args.warmup, args.compile and dev == "cuda", Path(tmp))
                epoch = 170_000 / sps
                print(f"{arch:10} {dev:6} {batch:5d} {sps:10.1f} {epoch / 60:19.1f} min", flush=True)


if __name__ == "__main__":
    main()
