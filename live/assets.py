"""Where the bundled demo model pack and demo clip live inside the installed package."""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
#: the model pack trained by scripts in benchmarks/../demo (encoder.onnx, decoder.onnx, model.json)
DEMO_MODEL_DIR = ASSETS / "demo_model"
#: a short clip played by `--input demo` (Big Buck Bunny, CC-BY 3.0, (c) Blender Foundation)
DEMO_CLIP = ASSETS / "demo_clip.mp4"
