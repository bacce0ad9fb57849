"""Small builders for hand-written consensus cases."""

from __future__ import annotations

import numpy as np

from annotations.consensus.types import ImageReads, ReaderRead
from annotations.taxonomy import NO_FINDING


def read(reader: str, *boxes: tuple[int, float, float, float, float]) -> ReaderRead:
    """``read("R1", (cls, x1, y1, x2, y2), ...)``; no boxes means No finding."""
    if not boxes:
        return ReaderRead(reader, np.zeros((0, 4)), np.zeros(0, int), frozenset({NO_FINDING}))
    arr = np.array(boxes, dtype=float)
    return ReaderRead(reader, arr[:, 1:], arr[:, 0].astype(int), frozenset())


def image(image_id: str, *reads: ReaderRead, size: float | None = 100.0) -> ImageReads:
    return ImageReads(image_id, size, size, list(reads))
