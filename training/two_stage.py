"""The two-stage decision: the image classifier's P(abnormal) gates the detector's boxes.

A detector alone is pulled towards false boxes by the ~70% of chest films that are
normal (the VinBigData experience); the remedy that won there is a classifier in
front: "abnormal?" first, boxes second.  Here, for one film with detector scores
``s`` and the classifier's ``p_normal``:

* every box score becomes ``s * (1 - p_normal)`` (a box on a film the classifier
  finds normal counts for little), unless the project keeps the detector's scores
  (``rescale=False``: only the drop below applies);
* a film whose ``p_normal`` reaches the operating point ``normal_threshold`` is
  called normal: its boxes are dropped;
* "No finding" is emitted with score ``p_normal``.

Without a classifier, ``detector_p_normal`` (one minus the best box score) is what the
detector alone says about "No finding", the baseline the gate is measured against.
Pure numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Gated:
    keep: np.ndarray  # (n,) bool: boxes kept
    scores: np.ndarray  # (n,) rescaled scores of every box (kept or not)
    no_finding: float  # the "No finding" score to emit
    called_normal: bool  # P(normal) reached the operating point


def gate(scores: np.ndarray, p_normal: float, normal_threshold: float = 0.9,
         rescale: bool = True) -> Gated:
    """Gate one film's box ``scores`` by the classifier's ``p_normal`` (``rescale=False``:
    drop the boxes of films called normal, keep the other scores as they are)."""
    scores = np.asarray(scores, dtype=np.float64)
    p = float(np.clip(p_normal, 0.0, 1.0))
    called_normal = p >= normal_threshold
    return Gated(keep=np.full(len(scores), not called_normal),
                 scores=scores * (1.0 - p) if rescale else scores.copy(),
                 no_finding=p, called_normal=called_normal)


def detector_p_normal(scores: np.ndarray) -> float:
    """The detector's own "No finding" score: one minus its most confident box."""
    scores = np.asarray(scores, dtype=np.float64)
    return float(1.0 - scores.max()) if len(scores) else 1.0


def gate_boxes(boxes: Sequence[dict[str, Any]], p_normal: float, normal_threshold: float = 0.9,
               rescale: bool = True) -> tuple[list[dict[str, Any]], Gated]:
    """``gate`` on box records (``{"score", ...}``): the kept boxes with their gated
    ``score`` and the detector's own as ``detector_score``, and the decision."""
    g = gate(np.array([b["score"] for b in boxes], dtype=np.float64), p_normal,
             normal_threshold, rescale)
    kept = [{**b, "score": float(s), "detector_score": b["score"]}
            for b, s, k in zip(boxes, g.scores.tolist(), g.keep.tolist(), strict=True) if k]
    return kept, g
