#!/usr/bin/env bash
# Recipe of the bundled demo model (live/assets/demo_model): this project's own pipeline, end to end,
# on the Big Buck Bunny trailer (CC-BY 3.0, (c) Blender Foundation; trailer edit from the MoviePy docs, MIT).
#
#   bash demo/make_demo_model.sh [FOOTAGE] [STEPS]
#
# On a 2-core CPU the default 2500 steps take about an hour (the lite recipe: 2000 pixel-led steps at
# ~13 samples/s, then 500 with the discriminator); on a GPU, pass more steps.
set -euo pipefail
cd "$(dirname "$0")/.."
footage=${1:-../shared/footage/bbb_trailer.mp4}
steps=${2:-2500}
work=${DEMO_WORK:-build/demo}
out=${DEMO_OUT:-live/assets/demo_model}
mkdir -p "$work"

# 1. every frame at 256x144; --dedupe drops the held title cards that would otherwise dominate
autoencoded prepare "$footage" -o "$work/dataset" --dedupe 2 --overwrite

# 2. the lite architecture with its CPU recipe (training/archs.py): a pixel-led autoencoder with the film's
#    latent noise annealed (0.3 -> 0.05), the discriminator joining for the last fifth to add the film's
#    texture, and the moving average of the weights as the model
autoencoded train "$work/dataset" -o "$work/run" --arch lite --steps "$steps" --checkpoint-every 125 --seed 0 \
  --overwrite --no-progress

# 3. the model pack (the checkpoint with the best PSNR on the evaluation frames), verified against torch on
#    real frames of the film
autoencoded export "$work/run" -o "$out" --which best --verify --frames "$work/dataset" --overwrite

# 4. its scores on every frame of the trailer, beside the 16x9 thumbnail and a blur
autoencoded eval "$out" "$footage" --json "$work/eval.json"
