"""Implicit feedback on a model: how a reader treated each predicted box.

Pure (numpy + scipy).  Given the boxes a reader was shown (the model's pre-labels)
and the reader's final boxes, every predicted box is one of:

* ``accepted``: the reader kept it: same class, IoU >= ``accept_iou`` (0.7);
* ``adjusted``: the reader kept the finding but moved, resized or relabeled it
  (matched at IoU >= ``match_iou`` but not accepted);
* ``rejected``: nothing of the reader's matches it (deleted);

and every reader box no prediction matches is ``missed`` by the model.  Matching
is one-to-one and optimal (Hungarian on IoU, classes ignored so a relabel is an
adjustment, not a rejection plus a miss).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from annotations.geometry import iou_matrix

ACCEPT_IOU = 0.7
MATCH_IOU = 0.1


@dataclass(frozen=True)
class BoxOutcome:
    outcome: str  # accepted | adjusted | rejected | missed
    predicted_index: int | None
    reader_index: int | None
    predicted_class: int | None
    reader_class: int | None
    iou: float


def classify(
    pred_boxes: np.ndarray, pred_classes: np.ndarray, reader_boxes: np.ndarray,
    reader_classes: np.ndarray, *, accept_iou: float = ACCEPT_IOU, match_iou: float = MATCH_IOU,
) -> list[BoxOutcome]:
    pred_classes = np.asarray(pred_classes, np.int64).reshape(-1)
    reader_classes = np.asarray(reader_classes, np.int64).reshape(-1)
    iou = iou_matrix(np.asarray(pred_boxes, np.float64).reshape(-1, 4),
                     np.asarray(reader_boxes, np.float64).reshape(-1, 4))
    pairs: dict[int, int] = {}
    if iou.size:
        rows, cols = linear_sum_assignment(np.where(iou >= match_iou, iou, -1.0), maximize=True)
        pairs = {int(r): int(c) for r, c in zip(rows, cols, strict=True)
                 if iou[r, c] >= match_iou}
    out: list[BoxOutcome] = []
    for p in range(len(pred_classes)):
        c = pairs.get(p)
        if c is None:
            out.append(BoxOutcome("rejected", p, None, int(pred_classes[p]), None,
                                  float(iou[p].max(initial=0.0))))
            continue
        same = pred_classes[p] == reader_classes[c] and iou[p, c] >= accept_iou
        out.append(BoxOutcome("accepted" if same else "adjusted", p, c, int(pred_classes[p]),
                              int(reader_classes[c]), float(iou[p, c])))
    matched = set(pairs.values())
    out.extend(
        BoxOutcome("missed", None, c, None, int(reader_classes[c]),
                   float(iou[:, c].max(initial=0.0)))
        for c in range(len(reader_classes)) if c not in matched
    )
    return out
