"""Within-group pair generation for the consensus engine.

IoU itself lives in :mod:`annotations.geometry` (one implementation, one zero-area
rule for the whole platform).
"""

from __future__ import annotations

import numpy as np


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
