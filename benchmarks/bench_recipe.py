"""Time to quality: training recipes side by side, on the same frames, at the same CPU minutes.

    python benchmarks/bench_recipe.py DATASET [--recipes film,augment,...] [--marks 5,15,30,60]
        [--side-by-side] [--foreign DIR] [--keep DIR] [--json FILE]

DATASET is a prepared dataset (the demo recipe's: every frame of the Big Buck Bunny trailer). Each recipe
trains once, sized so that its schedule (learning-rate decay, noise annealing, the adversarial phase) ends at
the last mark, and is scored at every mark with what export would ship (the averaged weights, decode the
mean) on both axes a VJ cares about:
- the film: PSNR and SSIM on every frame of the dataset beside the 16x9 thumbnail, and the same over 8 s
  from second 20 (the demo model's bar holds on both);
- footage it never saw (--foreign, default ../shared/footage/foreign, every 4th frame of each clip):
  structure (luma correlation at 32x18, the lowest clip's and the mean), the colourfulness of the greyscale
  clip's output, and whether the outputs' colours are closer to the film's than the inputs' (CIELAB
  Gaussian W2), as `autoencoded eval` measures them (autoencoded.metrics).

Time is CPU time divided by torch threads, i.e. minutes of the cores the run was given, so a mark means
the same on a busy machine; the scoring itself is not counted (a user's run does not score these frames),
the run's own evaluations and checkpoints are. Wall time is printed too. The run length comes from a short
calibration of the recipe's pixel-led and adversarial steps on this machine.

--side-by-side runs the recipes at once, one process each (--threads each, 1 by default): on a 2-core CPU
two recipes get a core each. --keep DIR keeps each run's folder (DIR/NAME), a normal training run that
`autoencoded export` reads.

The recipes (RECIPES): `new` is lite's defaults as they stand (training/archs.py: the layout recipe; the demo
model's spatial code is `--arch dream`, trained by demo/make_demo_model.sh); the others are deltas from
LAYOUT_LITE, lite as the dream levers were measured against (layout-8: a 256-entry FC code beside the input's
luma at 128x72), so that each means what it meant when it was measured.
- old: the release before last (transposed convolutions, batch 8, Adam 5e-4 beta1 0.5, the full VAE-GAN from
  the first step, pixel L1 1, similarity 0.1, KL 0.02, GAN 0.02, noise 1.0 -> 0.3);
- film: the frames as they are (no augmentation);
- the levers of issue 21: geometry only, degraded inputs, how much of each batch stays plain, and the GAN
  phase kept or dropped;
- no-layout, coarse-layout, layout-2, layout-4: no luma grid, or one at 16x9, 32x18 or 64x36 (the recipes of
  earlier demo models);
- ssim-1 and wide-tail: the SSIM term weighed as the L1 term; the decoder's last two layers 64 and 48 wide;
- the dream levers (issue 32), scored on both axes (the dream's columns: live/dream.py): coarse-learned, the
  16x9 layout with noise on the learned entries only and half of each batch at live's amounts; spatial,
  spatial-kl1, spatial-kl3 and spatial-32x18, a spatial code with no raw input beside it (16 channels over
  16x9, or 4 over 32x18), unbounded under the plain KL at three weights; dream-s05, dream-s1 and
  dream-s1-all, the 32x18 code bounded as the film's, its noise scale 0.5 or 1, on half or all of each batch.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from autoencoded import metrics
from autoencoded.live.dream import DreamTally, learned_share
from autoencoded.training.config import TrainConfig, resolve
from autoencoded.training.data import open_dataset
from autoencoded.training.evaluation import open_footage
from autoencoded.training.loop import Trainer
from autoencoded.training.model import autoencoder_from_state, frames_to_input, output_to_frames


def on(base: dict, **delta) -> dict:
    """`base` with `delta`'s settings, their model_overrides merged."""
    return {**base, **delta, "model_overrides": {**base.get("model_overrides", {}), **delta.get("model_overrides", {})}}


# lite as it was before the dream (the 128x72-layout demo model): a 256-entry FC code beside the input's luma at
# 128x72, noise 0.3 -> 0.05 on every entry; the recipes measured against it are deltas from it, so that they
# mean what they meant when they were measured
LAYOUT_LITE = dict(z_dim=256, layout=True, layout_scale=8, noise_start=0.3, noise_end=0.05, dream_share=0.0,
                   model_overrides={"latent_channels": 0, "latent_scale": 1, "noise_scale": 1.0})
RECIPES = {
    "old": on(LAYOUT_LITE, batch=8, lr=5e-4, lr_dis=5e-4, beta1=0.5, lr_schedule="constant", pixel_weight=1.0,
              ssim_weight=0.0, sim_weight=0.1, gamma=0.1, kl_weight=0.02, kl_noise_scaled=False, gan_weight=0.02,
              adversarial_start=0.0, ema=0.0, noise_start=1.0, noise_end=0.3,
              model_overrides={"upsample": "deconv", "dec_channels": []}),
    "new": {},
    "layout-8": LAYOUT_LITE,
    "film": on(LAYOUT_LITE, augment=False),
    "augment": on(LAYOUT_LITE, augment=True),
    "geometry": on(LAYOUT_LITE, augment=True, augment_degrade=0.0),
    "mix50": on(LAYOUT_LITE, augment=True, augment_plain=0.5),
    "mix10": on(LAYOUT_LITE, augment=True, augment_plain=0.1),
    "degrade80": on(LAYOUT_LITE, augment=True, augment_degrade=0.8),
    "no-gan": on(LAYOUT_LITE, augment=True, adversarial_start=1.0),
    "no-layout": on(LAYOUT_LITE, layout=False),
    "coarse-layout": on(LAYOUT_LITE, layout_scale=1),
    "layout-2": on(LAYOUT_LITE, layout_scale=2),
    "layout-4": on(LAYOUT_LITE, layout_scale=4),
    "ssim-1": on(LAYOUT_LITE, ssim_weight=1.0),
    "wide-tail": on(LAYOUT_LITE, model_overrides={"dec_channels": [192, 96, 64, 48]}),
    # the dream levers (issue 32): every latent entry that live noise moves is learned, with its sigma and
    # KL, and a share of each batch is decoded at the amounts live plays
    "coarse-learned": on(LAYOUT_LITE, layout_scale=1, dream_share=0.5),
    # a spatial code (no raw input beside it), unbounded, the plain KL to N(0, 1), all of each batch at the live
    # amounts: the KL weight sets sigma, and so the noise's reach
    **{name: on(LAYOUT_LITE, z_dim=z, layout=False, dream_share=1.0, noise_start=1.0, noise_end=1.0,
                kl_noise_scaled=False, saturation_weight=0.0, kl_weight=kl,
                model_overrides={"latent_channels": c, "latent_scale": s, "bounded_latent": False})
       for name, z, c, s, kl in (("spatial", 2304, 16, 1, 1e-2), ("spatial-kl3", 2304, 16, 1, 1e-3),
                                 ("spatial-kl1", 2304, 16, 1, 1e-1), ("spatial-32x18", 2304, 4, 2, 1e-2))},
    # the spatial code at 32x18 with the film's bound (mu in tanh's range, sigma at least 0.61), so the KL
    # cannot shrink sigma to nothing: the noise's reach is the model's noise_scale, played on a share of
    # each batch; the rest decodes near the mean (prior std 0.05)
    **{name: on(LAYOUT_LITE, z_dim=2304, layout=False, dream_share=share, noise_start=0.05, noise_end=0.05,
                model_overrides={"latent_channels": 4, "latent_scale": 2, "bounded_latent": True,
                                 "noise_scale": scale})
       for name, scale, share in (("dream-s05", 0.5, 0.5), ("dream-s1", 1.0, 0.5), ("dream-s1-all", 1.0, 1.0))},
}
FOREIGN = Path(__file__).resolve().parents[2] / "shared" / "footage" / "foreign"
GREY_CLIP = "camera"  # the greyscale clip: its output's colourfulness says whether the film's colours come back
WINDOW_S = (20.0, 28.0)  # 8 s from second 20, scored on its own too
FOREIGN_EVERY = 4
CHECKPOINTS = 8  # checkpoints (with their evaluations) over a run, as a user's run would write


def cpu_minutes(threads: int) -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return (r.ru_utime + r.ru_stime) / 60.0 / threads


def foreign_clips(folder: Path, width: int, height: int) -> dict[str, np.ndarray]:
    """Every FOREIGN_EVERY-th frame of each clip in `folder`, at the model's size as eval decodes them."""
    if not folder.is_dir():
        return {}
    clips = {}
    for path in sorted(folder.glob("*.mp4")):
        footage = open_footage(path, width, height, limit=0, batch=64)
        clips[path.stem.split("_")[0]] = np.concatenate(list(footage.frames))[::FOREIGN_EVERY]
    return clips


def references(frames: np.ndarray, window: slice, clips: dict[str, np.ndarray],
               palette: tuple[np.ndarray, np.ndarray]) -> dict:
    """What every mark is scored beside and no training changes, computed once a run: the 16x9 thumbnail on
    the film and the window, the thumbnail's motion on each clip, each clip's own palette distance."""
    row = {}
    for key, part in (("", slice(None)), ("window_", window)):
        thumb = metrics.compare(frames[part], metrics.baselines(frames[part])["thumbnail 16x9"])
        row.update({f"{key}thumb_psnr": thumb["psnr"], f"{key}thumb_ssim": thumb["ssim"]})
    for name, clip in clips.items():
        moved = metrics.motion(clip)
        thumbs = np.stack([metrics.thumbnail(f) for f in clip])
        row[f"thumb_motion_{name}"] = metrics.motion(thumbs) / moved if moved else 0.0
        row[f"w2_in_{name}"] = metrics.w2_gaussian(*metrics.lab_gaussian(clip), *palette)
    return row


@torch.no_grad()
def score(trainer: Trainer, frames: np.ndarray, window: slice, clips: dict[str, np.ndarray],
          palette: tuple[np.ndarray, np.ndarray]) -> dict:
    """Decode the mean of every frame with what export would ship (the average where there is one)."""
    ev = trainer.evaluate()  # recalibrates BatchNorm and gives the averaged weights, like a checkpoint
    state = {**trainer.model.state_dict(), **ev["averaged"]}
    ae = autoencoder_from_state(trainer.model_cfg, state).eval()

    def reconstruct(x: np.ndarray) -> np.ndarray:
        return np.concatenate([output_to_frames(ae(frames_to_input(torch.from_numpy(x[i:i + 32])))).numpy()
                               for i in range(0, len(x), 32)])

    def encode(x: np.ndarray):
        mu, log_sigma = ae.encoder(frames_to_input(torch.from_numpy(x)))
        return mu.numpy(), log_sigma.numpy()

    def decode(z: np.ndarray) -> np.ndarray:
        return np.concatenate([output_to_frames(ae.decoder(torch.from_numpy(z[i:i + 32]))).numpy()
                               for i in range(0, len(z), 32)])

    def dream(name: str, clip: np.ndarray, still: np.ndarray) -> dict:
        tally = DreamTally(encode, decode, trainer.model_cfg.plan, trainer.model_cfg.latent_dim, len(clip))
        for i in range(0, len(clip), 32):
            tally.add(clip[i:i + 32], still[i:i + 32])
        d = tally.figures(film_sharpness, None)
        return {f"change_05_{name}": d["change"]["0.5"], f"change_1_{name}": d["change"]["1.0"],
                f"sharpness_1_{name}": d["sharpness_ratio"], f"w2_1_{name}": w2(tally.lab),
                f"warp_0_{name}": d["warp_error_noise_0"], f"warp_05_{name}": d["warp_error_noise_05"],
                f"learned_share_{name}": d["learned_share"]}

    def w2(g: metrics.LabGaussian) -> float:
        return metrics.w2_gaussian(g.mean, g.cov, *palette)

    film_sharpness = metrics.sharpness(frames)
    recon = reconstruct(frames)
    row = {"film_sharpness": film_sharpness, "sharpness_0": metrics.sharpness(recon) / film_sharpness,
           **dream("film", frames[window], recon[window])}
    row["learned_share_film"] = learned_share(encode(frames[::max(1, len(frames) // 64)])[0], decode,
                                              trainer.model_cfg.plan)
    row["w2_0_film"] = metrics.w2_gaussian(*metrics.lab_gaussian(recon[window]), *palette)
    for key, part in (("", slice(None)), ("window_", window)):
        model = metrics.compare(frames[part], recon[part])
        row.update({f"{key}psnr": model["psnr"], f"{key}ssim": model["ssim"]})
    for name, clip in clips.items():
        out = reconstruct(clip)
        row.update(dream(name, clip, out))
        row[f"structure_{name}"] = metrics.structure(clip, out)
        row[f"colourfulness_{name}"] = metrics.colourfulness(out)
        # motion follow, as eval reports it: the output's frame-to-frame change over the input's (the clip is
        # every FOREIGN_EVERY-th frame, so the steps are longer than eval's; the thumbnail's is in references)
        moved = metrics.motion(clip)
        row[f"motion_{name}"] = metrics.motion(out) / moved if moved else 0.0
        row[f"w2_out_{name}"] = metrics.w2_gaussian(*metrics.lab_gaussian(out), *palette)
    if clips:
        row["structure_min"] = min(row[f"structure_{n}"] for n in clips)
        row["structure_mean"] = float(np.mean([row[f"structure_{n}"] for n in clips]))
    shown = ["film", *clips]  # the dream's bars hold on the film's window and on every foreign clip
    row["change_05_min"] = min(row[f"change_05_{n}"] for n in shown)
    row["change_1_min"] = min(row[f"change_1_{n}"] for n in shown)
    row["sharpness_1_max"] = max(row[f"sharpness_1_{n}"] for n in shown)
    row["warp_ratio_max"] = max(row[f"warp_05_{n}"] / max(row[f"warp_0_{n}"], 1e-6) for n in shown)
    return row


def config(name: str, dataset: Path, out: str, steps: int, seed: int, width: int, height: int) -> TrainConfig:
    return resolve(TrainConfig(dataset=str(dataset), out=out, arch="lite", width=width, height=height, steps=steps,
                               checkpoint_every=max(1, steps // CHECKPOINTS), seed=seed, device="cpu",
                               **RECIPES[name]))


def calibrate(name: str, dataset: Path, threads: int, seed: int) -> tuple[float, float, float]:
    """CPU minutes of one pixel-led and one adversarial step of this recipe here, and its adversarial start."""
    ds = open_dataset(dataset)
    costs = []
    with tempfile.TemporaryDirectory(prefix=f"calibrate-{name}-") as out:
        cfg = config(name, dataset, out, 1000, seed, ds.width, ds.height)
        trainer = Trainer(cfg, ds, progress=False)
        for adversarial_from in (cfg.steps + 1, 0):  # pixel-led, then adversarial
            trainer.adversarial_from = adversarial_from
            trainer.train_step()  # warm-up: first-call allocations
            t0 = cpu_minutes(threads)
            for _ in range(4):
                trainer.train_step()
            costs.append((cpu_minutes(threads) - t0) / 4)
    return costs[0], costs[1], cfg.adversarial_start


def run(name: str, dataset: Path, marks: list[float], threads: int, seed: int, keep: Path | None,
        foreign: Path) -> list[dict]:
    ds = open_dataset(dataset)
    frames = ds.batch(np.arange(len(ds)))
    fps = next((float(s["fps"]) for s in ds.meta.get("sources", []) if s.get("fps")), 24.0)
    window = slice(round(WINDOW_S[0] * fps), round(WINDOW_S[1] * fps))
    clips = foreign_clips(foreign, ds.width, ds.height)
    palette = metrics.lab_gaussian(frames)
    reference = references(frames, window, clips, palette)
    pix, adv, start = calibrate(name, dataset, threads, seed)
    per_step = start * pix + (1 - start) * adv
    steps = max(10, int(marks[-1] / per_step))
    print(json.dumps({"recipe": name, "calibration_cpu_s_per_step": {"pixel_led": pix * 60, "adversarial": adv * 60},
                      "steps": steps}), flush=True)
    with tempfile.TemporaryDirectory(prefix=f"recipe-{name}-") as tmp:
        out = keep / name if keep else Path(tmp) / "run"
        cfg = config(name, dataset, str(out), steps, seed, ds.width, ds.height)
        trainer = Trainer(cfg, ds, progress=False)
        if keep:  # what `autoencoded train --resume` and demo/make_pictures.py read
            cfg.save(out / "config.json")
        start_cpu, start_wall = cpu_minutes(threads), time.time()
        scoring = 0.0  # CPU minutes spent scoring, not training
        pending = list(marks)
        rows: list[dict] = []

        def at_mark(tr: Trainer, losses: dict) -> None:
            nonlocal scoring
            spent = cpu_minutes(threads) - start_cpu - scoring
            if pending and (spent >= pending[0] or tr.step == tr.total):
                s0 = cpu_minutes(threads)
                row = {"recipe": name, "minutes": pending.pop(0), "cpu_minutes": spent,
                       "wall_minutes": (time.time() - start_wall) / 60, "step": tr.step, "samples": tr.step * cfg.batch,
                       **reference, **score(tr, frames, window, clips, palette)}
                scoring += cpu_minutes(threads) - s0
                rows.append(row)
                print(json.dumps(row), flush=True)
            if not pending:
                tr.request_stop()

        trainer.run(on_step=at_mark)
    return rows


def side_by_side(args, names: list[str]) -> list[dict]:
    """Each recipe in its own process at once; their rows, in recipe order."""
    with tempfile.TemporaryDirectory(prefix="recipes-") as tmp:
        procs = []
        for name in names:
            cmd = [sys.executable, __file__, str(args.dataset), "--recipes", name, "--marks", args.marks,
                   "--threads", str(args.threads), "--seed", str(args.seed), "--json", f"{tmp}/{name}.json",
                   "--foreign", str(args.foreign)]
            if args.keep:
                cmd += ["--keep", str(args.keep)]
            procs.append(subprocess.Popen(cmd))
        try:
            codes = [p.wait() for p in procs]
        except KeyboardInterrupt:
            # a terminal's Ctrl-C reached the whole group: each run finishes its step, saves and scores what
            # it reached; wait for them instead of leaving them behind, then say where the runs stopped
            codes = [p.wait() for p in procs]
            print(f"interrupted; the runs stopped with exit codes {codes}"
                  + (f", their folders are in {args.keep}" if args.keep else ""), file=sys.stderr)
            sys.exit(130)
        if any(codes):
            sys.exit(f"a recipe's run failed (exit codes {codes})")
        return [row for name in names for row in json.loads(Path(f"{tmp}/{name}.json").read_text())]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--marks", default="5,15,30,60", help="CPU minutes at which to score (ascending).")
    ap.add_argument("--recipes", default="film,new", help=f"Comma-separated, from: {', '.join(RECIPES)}.")
    ap.add_argument("--foreign", type=Path, default=FOREIGN, help="Folder of clips the model never saw.")
    ap.add_argument("--side-by-side", action="store_true", help="Run the recipes at once, one process each.")
    ap.add_argument("--threads", type=int, default=None, help="Torch threads per run (2, or 1 side by side).")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, default=None, help="Keep the runs' folders here (DIR/old, DIR/new).")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    args.threads = args.threads or (1 if args.side_by_side else 2)
    torch.set_num_threads(args.threads)
    marks = sorted(float(m) for m in args.marks.split(","))
    names = args.recipes.split(",")
    for name in names:
        if name not in RECIPES:
            sys.exit(f"unknown recipe {name!r} ({', '.join(RECIPES)})")
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    if args.side_by_side and len(names) > 1:
        rows = side_by_side(args, names)
    else:
        rows = [row for name in names
                for row in run(name, args.dataset, marks, args.threads, args.seed, args.keep, args.foreign)]
    print(f"\n{'recipe':10s} {'CPU min':>7s} {'wall':>5s} {'samples':>7s} {'PSNR':>6s} {'vs thumb':>8s} {'SSIM':>5s} "
          f"{'window':>8s} {'structure min/mean':>18s} {'grey colour':>11s} {'change .5/1':>11s} {'sharp 0/1':>9s} "
          f"{'warp':>5s} {'learned':>7s}")
    for r in rows:
        foreign = (f"{r['structure_min']:8.2f} /{r['structure_mean']:5.2f}    " if "structure_min" in r else " " * 18)
        grey = f"{r[f'colourfulness_{GREY_CLIP}']:11.1f}" if f"colourfulness_{GREY_CLIP}" in r else ""
        print(f"{r['recipe']:10s} {r['cpu_minutes']:7.1f} {r['wall_minutes']:5.1f} {r['samples']:7d} {r['psnr']:6.2f} "
              f"{r['psnr'] - r['thumb_psnr']:+8.2f} {r['ssim']:5.3f} {r['window_psnr'] - r['window_thumb_psnr']:+8.2f} "
              f"{foreign}{grey} {r['change_05_min']:5.1f}/{r['change_1_min']:5.1f} "
              f"{r['sharpness_0']:4.2f}/{r['sharpness_1_max']:4.2f} {r['warp_ratio_max']:5.2f} {r['learned_share_film']:7.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
