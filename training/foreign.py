"""A few frames of footage no film is trained on, shipped with the package (training/assets/, credited in
its README): training's evaluations reconstruct them to log how much composition survives on foreign
footage, beside the film's own PSNR."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from autoencoded.media.framing import frame_for

ASSETS = Path(__file__).resolve().parent / "assets"


def foreign_frames(width: int, height: int) -> np.ndarray:
    """The shipped foreign frames as uint8 RGB, N x height x width x 3: the centre at the run's aspect,
    area-resized, as prepare frames a film (`--crop center`). Read afresh each time: five small PNGs."""
    out = []
    for path in sorted(ASSETS.glob("foreign_*.png")):
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise RuntimeError(f"{path}: a shipped asset that OpenCV cannot read (a broken installation)")
        rgb = np.ascontiguousarray(bgr[..., ::-1])
        out.append(frame_for(rgb.shape[1], rgb.shape[0], 1.0, "center", width, height).apply(rgb, width, height))
    if not out:
        raise RuntimeError(f"{ASSETS}: the shipped foreign frames are missing (a broken installation)")
    return np.stack(out)
