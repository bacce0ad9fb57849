"""The platform's one IoU: boxes ``x_min, y_min, x_max, y_max`` in continuous coordinates.

Consensus, agreement, prediction feedback, the detector metrics (mAP, FROC),
active-learning disagreement and the synthetic-lesion checks all call this
module, so a threshold means the same thing everywhere.  Pure numpy; it
imports nothing of the project, so every pure package (``training`` included)
may import it without a cycle.

Rules, decided once:

* **Continuous coordinates.**  Area is ``(x_max - x_min) * (y_max - y_min)``,
  no "+1 pixel" (pycocotools' convention, not the MATLAB VOC devkit's).
* **Zero union gives 0.**  A pair whose union has zero area (two zero-area
  boxes, *identical or not*) has IoU 0, never NaN and never 1: a degenerate box
  carries no extent to agree on, and with ``IoU >= thr`` it can never match.
  pycocotools gives 0/0 there, which no threshold test passes either.
* **A zero-area box against a real box gives 0** (their intersection has zero
  area).
* **Inverted boxes** (``x_max < x_min`` or ``y_max < y_min``) count as zero
  area, not negative area; callers that accept user input reject them earlier.
* **Touching is not overlapping.**  Boxes sharing only an edge or a corner
  intersect in zero area: IoU 0.  "Overlap" means IoU > 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def as_boxes(value: Any) -> np.ndarray:
    """``value`` as a float64 ``(n, 4)`` array; anything empty is ``(0, 4)``.

    Raises ``ValueError`` for any other shape, so a transposed or flattened
    array fails loudly instead of yielding nonsense overlaps.
    """
    b = np.asarray(value, dtype=np.float64)
    if b.size == 0:
        return np.zeros((0, 4))
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must be (n, 4), got shape {b.shape}")
    return b


def box_area(boxes: np.ndarray) -> np.ndarray:
    """Area of ``boxes[..., 4]``; inverted sides count as 0."""
    w = np.clip(boxes[..., 2] - boxes[..., 0], 0.0, None)
    h = np.clip(boxes[..., 3] - boxes[..., 1], 0.0, None)
    return w * h


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of ``a[..., 4]`` and ``b[..., 4]``, broadcast against each other.

    The single implementation; :func:`paired_iou` and :func:`iou_matrix` are
    the two shapes callers need.  See the module docstring for the rules.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    lo = np.maximum(a[..., :2], b[..., :2])
    hi = np.minimum(a[..., 2:], b[..., 2:])
    side = np.clip(hi - lo, 0.0, None)
    inter = side[..., 0] * side[..., 1]
    union = box_area(a) + box_area(b) - inter
    positive = union > 0
    return np.where(positive, inter / np.where(positive, union, 1.0), 0.0)


def paired_iou(a: Any, b: Any) -> np.ndarray:
    """``(n,)`` IoU of ``a[i]`` with ``b[i]``; cheap for long lists of candidate pairs."""
    a, b = as_boxes(a), as_boxes(b)
    if len(a) != len(b):
        raise ValueError(f"paired_iou needs equal lengths, got {len(a)} and {len(b)}")
    return iou(a, b)


def iou_matrix(a: Any, b: Any) -> np.ndarray:
    """``(len(a), len(b))`` IoU of every box of ``a`` with every box of ``b``."""
    a, b = as_boxes(a), as_boxes(b)
    return iou(a[:, None, :], b[None, :, :])
