"""Agreement between masks: Dice and IoU, pairwise between readers and reader vs consensus.

Both masks empty is perfect agreement (1.0): two readers who agree a structure is absent
agree.  Pure module: numpy only (the overlap counts are one line each; MONAI's metrics are
used where distances matter, in the model's gold evaluation).
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import combinations

import numpy as np


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def pairwise(masks: Mapping[str, np.ndarray]) -> dict[str, float | None]:
    """Mean pairwise Dice and IoU over every pair of readers (None with fewer than two)."""
    pairs = list(combinations(sorted(masks), 2))
    if not pairs:
        return {"dice": None, "iou": None, "pairs": 0}
    d = [dice(masks[a], masks[b]) for a, b in pairs]
    j = [iou(masks[a], masks[b]) for a, b in pairs]
    return {"dice": float(np.mean(d)), "iou": float(np.mean(j)), "pairs": len(pairs)}


def reader_vs_consensus(masks: Mapping[str, np.ndarray], consensus: np.ndarray
                        ) -> dict[str, dict[str, float]]:
    """Each reader's Dice and IoU against the consensus mask."""
    return {r: {"dice": dice(m, consensus), "iou": iou(m, consensus)}
            for r, m in sorted(masks.items())}
