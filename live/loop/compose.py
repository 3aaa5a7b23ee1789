"""The pixel effects after decode, one function shared by live (the sink thread) and render, so the two
cannot drift: the model's picture upscaled into its pane of the output, dry/wet with the input (`mix`),
and the input beside it (render's --side-by-side). The input is always shown framed as the model sees it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from autoencoded.live.engines.frames import picture_size, upscale
from autoencoded.media.framing import Framing, pad_to


def dry_wet(model_frame: np.ndarray, input_frame: np.ndarray, mix: float) -> np.ndarray:
    """Blend the model's output with the input (same shape, uint8). mix 1 = all model."""
    if mix >= 1.0:
        return model_frame
    if mix <= 0.0:
        return input_frame
    out = model_frame.astype(np.float32) * mix + input_frame.astype(np.float32) * (1.0 - mix)
    return np.rint(out).astype(np.uint8)


def input_picture(frame: np.ndarray, framing: Framing, aspect: float, width: int, height: int) -> np.ndarray:
    """The input as the model sees it (`framing`, worked out for the model's size), at the size a picture of
    the model's `aspect` has in width x height, black bars around it."""
    return pad_to(framing.apply(frame, *picture_size(aspect, width, height)), width, height)


def compose(wet: np.ndarray, dry: Callable[[int, int], np.ndarray], mix: float, width: int, height: int,
            side_by_side: bool = False) -> np.ndarray:
    """The output frame, width x height: `wet` (the model's picture, any size) upscaled into its pane and
    blended with the input by `mix`; with side_by_side the input fills the left half. `dry(w, h)` is the
    input's picture at a pane's size, asked for only when mix < 1 or side by side."""
    panes = (width // 2, width - width // 2) if side_by_side else (width,)
    w = panes[-1]
    out = upscale(wet, w, height)
    if mix < 1.0 or side_by_side:
        beside = dry(panes[0], height)
        if mix < 1.0:
            out = dry_wet(out, beside if panes[0] == w else pad_to(beside, w, height), mix)
        if side_by_side:
            out = np.concatenate([beside, out], axis=1)
    return out
