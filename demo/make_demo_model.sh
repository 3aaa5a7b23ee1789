#!/usr/bin/env bash
# Recipe of the bundled demo model (live/assets/demo_model): this project's own pipeline, end to end,
# on the Big Buck Bunny trailer (CC-BY 3.0, (c) Blender Foundation; trailer edit from the MoviePy docs, MIT).
#
#   bash demo/make_demo_model.sh [FOOTAGE] [STEPS]
#
# On a 2-core CPU the default 2000 steps take about 35 minutes (11 samples/s); on a GPU, pass more steps.
set -euo pipefail
cd "$(dirname "$0")/.."
footage=${1:-../shared/footage/bbb_trailer.mp4}
steps=${2:-2000}
work=${DEMO_WORK:-build/demo}
out=${DEMO_OUT:-live/assets/demo_model}
mkdir -p "$work"

# 1. every frame at 256x144; --dedupe drops the held title cards that would otherwise dominate
autoencoded prepare "$footage" -o "$work/dataset" --dedupe 2 --overwrite

# 2. the lite architecture with its CPU-friendly defaults; noise annealed from 1.0 to 0.3 (cosine; lower ends need longer runs: the KL target tightens as 1/noise^2)
autoencoded train "$work/dataset" -o "$work/run" --arch lite --steps "$steps" --checkpoint-every 100 \
  --noise-start 1.0 --noise-end 0.3 --noise-schedule cosine --seed 0 --overwrite

# 3. the model pack, verified against torch on real frames of the film
autoencoded export "$work/run" -o "$out" --which best --verify --frames "$work/dataset" --overwrite
