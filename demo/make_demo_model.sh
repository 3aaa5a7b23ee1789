#!/usr/bin/env bash
# Recipe of the bundled demo model (live/assets/demo_model): this project's own pipeline, end to end,
# on the Big Buck Bunny trailer (CC-BY 3.0, (c) Blender Foundation; trailer edit from the MoviePy docs, MIT).
#
#   bash demo/make_demo_model.sh [FOOTAGE] [STEPS]
#
# The shipped model was trained by exactly these commands on the project's 2-core CPU: both cores (two torch
# threads), 4600 steps of 16 frames: 52 minutes of training ("trained 4600 steps in 3117.1 s (23.6 samples/s)"; the
# machine's speed varies by the day: the 64x36 model before it made 3200 steps in the same time on a slow one).
# On a GPU, pass more steps.
set -euo pipefail
cd "$(dirname "$0")/.."
footage=${1:-../shared/footage/bbb_trailer.mp4}
steps=${2:-5200}
work=${DEMO_WORK:-build/demo}
out=${DEMO_OUT:-live/assets/demo_model}
mkdir -p "$work"

# 1. every frame at 256x144, as the film's model saw every frame of Blade Runner. --dedupe 2 would keep 542 of
#    the 1323, but the model is judged on every frame, and it scored 1.3 dB lower on them after 4 CPU minutes
#    of training on the deduplicated ones than on all (the held and slow frames it never saw come back worse)
autoencoded prepare "$footage" -o "$work/dataset" --overwrite

# 2. the lite architecture with its CPU recipe (training/archs.py): the input's luma at 128x72 (eight times the
#    decoder's 16x9 bottom grid) carried in the latent beside the learned code and read by all four of the
#    decoder's layers (footage it never saw keeps its composition and its motion), the film
#    seen through other cameras (crops, flips, rotations; half of each batch plain, half of the rest with a
#    degraded input), a pixel-led autoencoder (L1 + SSIM) with the film's latent noise annealed (0.3 -> 0.05),
#    a noise-scaled KL and a penalty that keeps the encoder's tanh out of saturation, and the moving average
#    of the weights as the model (the discriminator does not join: at equal CPU time it bought no texture).
#    Two threads: on the 2-core CPU one run on both cores makes 1.8x the steps of each of two one-thread runs
#    side by side (14.7 against 8.3 samples/s; torch reads OMP_NUM_THREADS)
OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} autoencoded train "$work/dataset" -o "$work/run" --arch dream --steps "$steps" \
  --checkpoint-every $((steps / 8)) --seed 0 --overwrite --no-progress

# 3. the model pack (the checkpoint with the best PSNR on the evaluation frames), verified against torch on
#    real frames of the film, with as many of the film's frames in its memory bank as keep it within 25 MB
autoencoded export "$work/run" -o "$out" --which best --verify --frames "$work/dataset" --overwrite --max-pack-mb 25

# 4. its scores on every frame of the trailer, beside the 16x9 thumbnail and a blur
autoencoded eval "$out" "$footage" --json "$work/eval.json"
