"""Box geometry on arrays: IoU of paired rows and within-group pair generation."""

from __future__ import annotations

import numpy as np


def paired_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of ``a[i]`` with ``b[i]`` (both (n, 4) x_min, y_min, x_max, y_max)."""
    lo = np.maximum(a[:, :2], b[:, :2])
    hi = np.minimum(a[:, 2:], b[:, 2:])
    side = np.maximum(hi - lo, 0.0)
    inter = side[:, 0] * side[:, 1]
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a + area_b - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = inter / union
    return np.where(union > 0, iou, 0.0)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) IoU matrix."""
    ia = np.repeat(np.arange(len(a)), len(b))
    ib = np.tile(np.arange(len(b)), len(a))
    return paired_iou(a[ia], b[ib]).reshape(len(a), len(b))


def pairs_within(starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All index pairs (i < j) whose rows share a segment ``[starts[g], starts[g+1])``."""
    sizes = np.diff(starts)
    n_pairs = sizes * (sizes - 1) // 2
    total = int(n_pairs.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    # rows i of each segment repeated (size - 1 - local_i) times, j runs after i
    n = int(starts[-1])
    seg = np.repeat(np.arange(len(sizes)), sizes)
    local = np.arange(n) - starts[:-1][seg]
    reps = sizes[seg] - 1 - local
    i = np.repeat(np.arange(n), reps)
    offset = np.arange(total) - np.repeat(np.cumsum(reps) - reps, reps)
    j = i + 1 + offset
    return i, j
