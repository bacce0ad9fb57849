"""Mask helpers of the tests: filled ellipses of known size."""

from __future__ import annotations

import cv2
import numpy as np


def ellipse(shape: tuple[int, int], cx: int, cy: int, ax: int, ay: int) -> np.ndarray:
    """A boolean ``shape`` mask holding one filled ellipse (centre, half-axes in px)."""
    m = np.zeros(shape, np.uint8)
    cv2.ellipse(m, (cx, cy), (ax, ay), 0, 0, 360, 1, -1)
    return m.astype(bool)
