"""--overlay: the status line drawn onto the output frame."""

from __future__ import annotations

import cv2
import numpy as np


def draw_overlay(frame: np.ndarray, text: str) -> np.ndarray:
    """The status text in a dark band along the top of a copy of `frame`."""
    out = frame.copy()
    h, w = out.shape[:2]
    scale = max(0.35, min(1.0, w / 1600))
    band = int(22 * scale / 0.5)
    out[:band] = (out[:band].astype(np.uint16) * 2 // 5).astype(np.uint8)
    cv2.putText(out, text, (6, band - int(6 * scale / 0.5)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                cv2.LINE_AA)
    return out
