"""PNG sample grids, as in the paper's figures: inputs over their reconstructions, then prior samples."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from autoencoded.training.weights import atomic_write_bytes


def grid(rows: list[np.ndarray], pad: int = 2) -> np.ndarray:
    """rows: each uint8 N x H x W x 3 RGB (same H, W) -> one RGB image, rows stacked, white gutters."""
    n = max(r.shape[0] for r in rows)
    h, w = rows[0].shape[1:3]
    out = np.full((len(rows) * (h + pad) + pad, n * (w + pad) + pad, 3), 255, np.uint8)
    for ri, r in enumerate(rows):
        for ci in range(r.shape[0]):
            y, x = pad + ri * (h + pad), pad + ci * (w + pad)
            out[y:y + h, x:x + w] = r[ci]
    return out


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    """Encode with OpenCV (BGR order) and write atomically."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"could not encode PNG for {path}")
    atomic_write_bytes(path, buf.tobytes())
    return Path(path)
