"""Per-image uncertainty scores from a detector's per-detection class probabilities.

Pure numpy.  ``probs`` is the ``(n, num_classes + 1)`` softmax of an image's kept
detections (last column: background), as ``Detector.predict`` returns it.

Per detection:

* ``least_confidence`` = 1 - max class probability (background included: a box the
  model barely prefers over background is uncertain);
* ``entropy`` = Shannon entropy of the row, normalised by log(num_classes + 1) to [0, 1].

Per image, each is aggregated by ``max``, ``mean`` and ``sum`` over detections
(active-learning strategies choose).  An image without detections scores 0: the
model is confident it sees nothing; diversity strategies cover such images.
"""

from __future__ import annotations

import numpy as np

AGGREGATIONS = ("max", "mean", "sum")


def detection_uncertainty(probs: np.ndarray) -> dict[str, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError("probs must be (n, classes + 1)")
    if p.shape[0] == 0:
        return {"least_confidence": np.zeros(0), "entropy": np.zeros(0)}
    k = p.shape[1]
    safe = np.clip(p, 1e-12, 1.0)
    entropy = -(p * np.log(safe)).sum(axis=1) / (np.log(k) if k > 1 else 1.0)
    return {"least_confidence": 1.0 - p.max(axis=1), "entropy": np.clip(entropy, 0.0, 1.0)}


def image_uncertainty(probs: np.ndarray) -> dict[str, float]:
    """``{"entropy_max": ..., "entropy_mean": ..., "least_confidence_sum": ..., ...}``."""
    per = detection_uncertainty(probs)
    out: dict[str, float] = {}
    for name, values in per.items():
        for agg in AGGREGATIONS:
            out[f"{name}_{agg}"] = float(getattr(np, agg)(values)) if len(values) else 0.0
    out["detections"] = float(len(per["entropy"]))
    return out
