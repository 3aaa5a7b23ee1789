"""Time to quality: the previous lite recipe against the current one, on the same frames, in one sitting.

    python benchmarks/bench_recipe.py DATASET [--marks 5,15,30,60] [--json FILE]

DATASET is a prepared dataset (the demo recipe's: the Big Buck Bunny trailer with --dedupe 2). Each recipe
trains once, for the run length it would be given for the last mark, and is scored at every mark: the
averaged (EMA) weights where the recipe has them, decode the mean, PSNR and SSIM on every frame of the
dataset beside the 16x9 thumbnail (autoencoded.metrics). Time is this process's CPU time divided by its
torch threads, i.e. minutes of the whole CPU, so a mark means the same on a busy machine (the wall time
is printed too). The recipes run one after the other with the same threads and seed.

- old: the release before (lite with transposed convolutions, batch 8, Adam 5e-4 beta1 0.5, the full
  VAE-GAN from the first step, pixel L1 1, similarity 0.1, KL 0.02, GAN 0.02, noise 1.0 -> 0.3);
- new: the lite defaults (training/archs.py): resize-convolution decoder, a pixel-led phase with the
  discriminator joining for the last fifth, Adam 2e-3 with cosine decay, batch 16, EMA 0.999.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from autoencoded import metrics
from autoencoded.training.config import TrainConfig, resolve
from autoencoded.training.data import open_dataset
from autoencoded.training.loop import Trainer
from autoencoded.training.model import autoencoder_from_state, frames_to_input, output_to_frames

# samples/s of each recipe on the 2-core CPU this project is built on (bench_train.py), to size each run
# so that it ends at the last mark: the learning-rate decay and the adversarial phase depend on the length
SAMPLES_PER_CPU_MINUTE = {"old": 11.0 * 60, "new": 12.5 * 60}

RECIPES = {
    "old": dict(batch=8, lr=5e-4, lr_dis=5e-4, beta1=0.5, lr_schedule="constant", pixel_weight=1.0, sim_weight=0.1,
                gamma=0.1, kl_weight=0.02, gan_weight=0.02, adversarial_start=0.0, ema=0.0, noise_start=1.0,
                noise_end=0.3, model_overrides={"upsample": "deconv", "dec_channels": []}),
    "new": {},
}


def cpu_minutes(threads: int) -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return (r.ru_utime + r.ru_stime) / 60.0 / threads


@torch.no_grad()
def score(trainer: Trainer, frames: np.ndarray) -> dict:
    """Decode the mean of every frame with what export would ship (the average where there is one)."""
    ev = trainer.evaluate()  # recalibrates BatchNorm and gives the averaged weights, like a checkpoint
    state = {**trainer.model.state_dict(), **ev["averaged"]}
    ae = autoencoder_from_state(trainer.model_cfg, state)
    recon = np.concatenate([output_to_frames(ae(frames_to_input(torch.from_numpy(frames[i:i + 32])))).numpy()
                            for i in range(0, len(frames), 32)])
    model = metrics.compare(frames, recon)
    thumb = metrics.compare(frames, metrics.baselines(frames)["thumbnail 16x9"])
    return {"psnr": model["psnr"], "ssim": model["ssim"], "thumb_psnr": thumb["psnr"], "thumb_ssim": thumb["ssim"]}


def run(name: str, dataset: Path, marks: list[float], threads: int, seed: int) -> list[dict]:
    ds = open_dataset(dataset)
    frames = ds.batch(np.arange(len(ds)))
    over = dict(RECIPES[name])
    batch = over.get("batch", 16)
    steps = max(10, int(marks[-1] * SAMPLES_PER_CPU_MINUTE[name] / batch))
    with tempfile.TemporaryDirectory(prefix=f"recipe-{name}-") as out:
        cfg = resolve(TrainConfig(dataset=str(dataset), out=out, arch="lite", width=ds.width, height=ds.height,
                                  steps=steps, checkpoint_every=steps, seed=seed, device="cpu", **over))
        trainer = Trainer(cfg, ds, progress=False)
        start_cpu, start_wall = cpu_minutes(threads), time.time()
        pending = list(marks)
        rows: list[dict] = []

        def at_mark(tr: Trainer, losses: dict) -> None:
            spent = cpu_minutes(threads) - start_cpu
            if pending and spent >= pending[0]:
                row = {"recipe": name, "minutes": pending.pop(0), "cpu_minutes": spent,
                       "wall_minutes": (time.time() - start_wall) / 60, "step": tr.step, "samples": tr.step * cfg.batch,
                       **score(tr, frames)}
                rows.append(row)
                print(json.dumps(row), flush=True)
            if not pending:
                tr.request_stop()

        trainer.run(on_step=at_mark)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--marks", default="5,15,30,60", help="CPU minutes at which to score (ascending).")
    ap.add_argument("--recipes", default="old,new")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    marks = sorted(float(m) for m in args.marks.split(","))
    rows = []
    for name in args.recipes.split(","):
        if name not in RECIPES:
            sys.exit(f"unknown recipe {name!r} (old, new)")
        rows += run(name, args.dataset, marks, args.threads, args.seed)
    print(f"\n{'recipe':6s} {'CPU min':>7s} {'wall min':>8s} {'samples':>8s} {'PSNR':>6s} {'vs thumb':>8s} {'SSIM':>5s}")
    for r in rows:
        print(f"{r['recipe']:6s} {r['cpu_minutes']:7.1f} {r['wall_minutes']:8.1f} {r['samples']:8d} {r['psnr']:6.2f} "
              f"{r['psnr'] - r['thumb_psnr']:+8.2f} {r['ssim']:5.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
