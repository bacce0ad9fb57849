"""Mask outlines for display: the boundary of each connected part as a closed polygon.

The viewer draws masks as outlines (several readers' masks of one structure stay
readable on top of each other, and the film under them stays visible).  OpenCV traces
the boundaries; Douglas-Peucker simplification at ``tolerance`` pixels and a cap on the
points keep a lung's outline to a few hundred points however large the film.

Pure module: numpy and OpenCV.
"""

from __future__ import annotations

import cv2
import numpy as np

#: Parts smaller than this many pixels are specks, not outlines worth drawing.
MIN_PART_PIXELS = 4
MAX_POINTS = 2000


def mask_outline(mask: np.ndarray, *, tolerance: float = 1.0, scale: tuple[float, float] =
                 (1.0, 1.0)) -> list[list[float]]:
    """Closed polygons ``[x0, y0, x1, y1, ...]`` around each part of ``mask`` (outer
    boundaries; holes are not traced), coordinates multiplied by ``scale`` (x, y)."""
    m = np.asarray(mask, np.uint8)
    if m.ndim != 2 or not m.any():
        return []
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = []
    budget = MAX_POINTS
    for c in sorted(contours, key=cv2.contourArea, reverse=True):
        if cv2.contourArea(c) < MIN_PART_PIXELS or budget <= 0:
            continue
        eps = tolerance
        poly = cv2.approxPolyDP(c, eps, True)
        while len(poly) > budget and eps < 64:
            eps *= 2
            poly = cv2.approxPolyDP(c, eps, True)
        pts = poly.reshape(-1, 2).astype(np.float64) * np.asarray(scale)
        budget -= len(pts)
        out.append([round(float(v), 1) for v in pts.ravel()])
    return out
