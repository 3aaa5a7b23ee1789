"""The pixel effects after decode, one function shared by live (the sink thread) and render, so the two
cannot drift: the model's picture upscaled into its pane of the output, dry/wet with the input (`mix`),
and the input beside it (render's --side-by-side). The input is always shown framed as the model sees it,
its picture made by the caller before (input_picture, at dry_size), from the Framing its frame was fitted with.
"""

from __future__ import annotations

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


def input_picture(frame: np.ndarray, framing: Framing, width: int, height: int) -> np.ndarray:
    """The input as the model sees it (`framing`, worked out for the model's size), at the size a picture of
    the model's aspect has in width x height, black bars around it."""
    return pad_to(framing.apply(frame, *picture_size(framing.target, width, height)), width, height)


def _panes(width: int, side_by_side: bool) -> tuple[int, ...]:
    return (width // 2, width - width // 2) if side_by_side else (width,)


def dry_size(mix: float, width: int, height: int, side_by_side: bool = False) -> tuple[int, int] | None:
    """The size of the input's picture that compose needs (its pane's), None when it needs none (mix 1)."""
    return (_panes(width, side_by_side)[0], height) if mix < 1.0 or side_by_side else None


def compose(wet: np.ndarray, dry: np.ndarray | None, mix: float, width: int, height: int,
            side_by_side: bool = False) -> np.ndarray:
    """The output frame, width x height: `wet` (the model's picture, any size) upscaled into its pane and
    blended with the input's picture `dry` (at dry_size; None where that is None) by `mix`; with
    side_by_side the input fills the left half."""
    panes = _panes(width, side_by_side)
    w = panes[-1]
    out = upscale(wet, w, height)
    if mix < 1.0:
        out = dry_wet(out, dry if panes[0] == w else pad_to(dry, w, height), mix)
    if side_by_side:
        out = np.concatenate([dry, out], axis=1)
    return out
