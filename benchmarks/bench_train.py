"""Training throughput (samples/s) and FLOP utilisation, for both architectures and both phases of a run.

    .venv/bin/python benchmarks/bench_train.py [--steps 5] [--batch 0] [--device cpu|cuda|all] [--compile]
        [--sizes 256x144,96x64] [--peak-gflops 156.8] [--layout trainer|both]

Times training steps of the real Trainer (data read from a memory-mapped dataset) after warm-up steps;
evaluation and checkpoints are not included. Each architecture is timed in its pixel-led phase (encoder and
decoder only, when its recipe has one) and in its adversarial phase (the three networks, three
discriminator passes a step). FLOPs a sample are counted from the layers (autoencoded.training.model.
count_flops): forward plus a backward of twice the forward. Utilisation is that rate against the CPU's peak,
by default 2 cores x 2.45 GHz x 32 FP32 FLOPs a cycle (AVX2, two FMA units: the AMD EPYC this project is
built on); pass --peak-gflops for another machine. A step at 96x64 should cost at most a quarter of one
at 256x144 (it has 6x fewer pixels): the ratio is printed. `--layout both` times each phase with the
networks in channels-last and in contiguous (NCHW) memory, one right after the other, and prints the ratio;
by default the Trainer picks (channels-last on CUDA and the CPU).
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
from autoencoded.training.model import count_flops  # noqa: E402


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


def flops_per_sample(tr: Trainer, adversarial: bool) -> float:
    """Training FLOPs a sample: forward passes counted from the layers, backward taken as twice the forward."""
    cfg = tr.model_cfg
    x = torch.zeros(1, 3, cfg.height, cfg.width)
    enc = count_flops(tr.nets["encoder"], x)
    dec = count_flops(tr.nets["decoder"], torch.zeros(1, cfg.latent_dim))
    if not adversarial:
        return 3.0 * (enc + dec)
    dis = count_flops(tr.nets["discriminator"], x)
    # decoder on the reconstruction and on a prior sample; the discriminator on real, reconstructed and prior
    return 3.0 * (enc + 2 * dec + 3 * dis)


def bench(arch: str, device: str, batch: int, steps: int, warmup: int, compile_: bool, tmp: Path,
          size: tuple[int, int] = (256, 144), adversarial: bool = True,
          channels_last: bool | None = None) -> tuple[float, float]:
    """-> (samples/s, training FLOPs a sample)."""
    w, h = size
    n = max(batch * (steps + warmup + 1), 64)
    ds = make_dataset(tmp / f"ds-{n}-{w}x{h}", n, w, h)
    out = tmp / f"run-{arch}-{device}-{w}x{h}-{'adv' if adversarial else 'pix'}-{channels_last}"
    out.mkdir()
    cfg = resolve(TrainConfig(dataset=str(ds), out=str(out), arch=arch, width=w, height=h,
                              steps=steps + warmup, batch=batch or None, device=device, compile=compile_, guard=False,
                              adversarial_start=0.0 if adversarial else 1.0))
    tr = Trainer(cfg, open_dataset(ds), progress=False)
    if channels_last is not None:
        tr.use_channels_last(channels_last)
    for _ in range(warmup):
        tr.train_step()
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        tr.train_step()
    if device == "cuda":
        torch.cuda.synchronize()
    return steps * cfg.batch / (time.perf_counter() - t), flops_per_sample(tr, adversarial)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=0, help="default: the architecture's (lite 16, broad2016 12)")
    ap.add_argument("--device", default="all", choices=["all", "cpu", "cuda"])
    ap.add_argument("--arch", default="all", choices=["all", "lite", "broad2016"])
    ap.add_argument("--sizes", default="256x144,96x64")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--peak-gflops", type=float, default=2 * 2.45 * 32)
    ap.add_argument("--layout", default="trainer", choices=["trainer", "both"],
                    help="both: channels-last and contiguous side by side")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    archs = ["lite", "broad2016"] if args.arch == "all" else [args.arch]
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
          + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no CUDA"))
    layouts = [None] if args.layout == "trainer" else [True, False]
    print(f"{'arch':10} {'device':6} {'size':>8} {'phase':12} {'layout':14} {'samples/s':>10} {'GFLOP/sample':>13} "
          f"{'GFLOP/s':>8} {'of peak':>8} {'step ms':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for dev in devices:
            for arch in archs:
                phases = [False, True] if resolve(TrainConfig(arch=arch)).adversarial_start > 0 else [True]
                step_ms: dict[tuple, float] = {}
                for size in sizes:
                    for adversarial in phases:
                        rates = {}
                        for layout in layouts:
                            sps, flops = bench(arch, dev, args.batch, args.steps, args.warmup,
                                               args.compile and dev == "cuda", Path(tmp), size, adversarial, layout)
                            batch = args.batch or resolve(TrainConfig(arch=arch)).batch
                            rates[layout] = sps
                            if layout is not False:
                                step_ms[(size, adversarial)] = 1000 * batch / sps
                            rate = sps * flops / 1e9
                            util = f"{100 * rate / args.peak_gflops:7.1f}%" if dev == "cpu" else "       -"
                            name = {None: "trainer's", True: "channels-last", False: "contiguous"}[layout]
                            print(f"{arch:10} {dev:6} {size[0]:>4}x{size[1]:<3} "
                                  f"{'adversarial' if adversarial else 'pixel-led':12} {name:14} {sps:10.1f} "
                                  f"{flops / 1e9:13.2f} {rate:8.1f} {util} {1000 * batch / sps:8.1f}", flush=True)
                        if len(rates) == 2:
                            print(f"{arch:10} {dev:6} channels-last runs {rates[True] / rates[False]:.2f}x "
                                  "the contiguous layout's samples/s", flush=True)
                if len(sizes) > 1:
                    for adversarial in phases:
                        big, small = step_ms[(sizes[0], adversarial)], step_ms[(sizes[-1], adversarial)]
                        print(f"{arch:10} {dev:6} {'adversarial' if adversarial else 'pixel-led'} step at "
                              f"{sizes[-1][0]}x{sizes[-1][1]} costs {small / big:.2f} of one at "
                              f"{sizes[0][0]}x{sizes[0][1]}")


if __name__ == "__main__":
    main()
