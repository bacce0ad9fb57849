"""Simulated readers with known truth, to compare strategies honestly.

Real data has no ground truth, so "does reader weighting help?" is answered
on synthetic reads: truth lesions per image, and readers that each miss
lesions (sensitivity), add false positives (Poisson per image) and jitter box
edges (a fraction of the box size).  Seeded, hence reproducible.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from annotations.consensus.agreement import optimal_match_count
from annotations.consensus.types import ConsensusResult, ImageReads, ReaderRead
from annotations.taxonomy import NO_FINDING


@dataclass(frozen=True)
class SimReader:
    code: str
    sensitivity: float
    fp_per_image: float
    jitter: float  # std of edge noise as a fraction of box width/height


def _random_boxes(rng: np.random.Generator, n: int, size: float) -> np.ndarray:
    wh = rng.uniform(0.05, 0.25, (n, 2)) * size
    xy = rng.uniform(0, 1, (n, 2)) * (size - wh)
    return np.concatenate([xy, xy + wh], axis=1)


def simulate(
    readers: Sequence[SimReader],
    n_images: int = 2000,
    n_classes: int = 3,
    lesion_rate: float = 1.0,
    size: float = 1024.0,
    seed: int = 0,
) -> tuple[list[ImageReads], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Return (reads, truth) where ``truth[image_id] = (boxes, classes)``."""
    rng = np.random.default_rng(seed)
    images, truth = [], {}
    for i in range(n_images):
        image_id = f"sim{i:06d}"
        n_true = rng.poisson(lesion_rate)
        t_boxes = _random_boxes(rng, n_true, size)
        t_cls = rng.integers(0, n_classes, n_true)
        truth[image_id] = (t_boxes, t_cls)
        reads = []
        for r in readers:
            hit = rng.random(n_true) < r.sensitivity
            b = t_boxes[hit].copy()
            wh = np.repeat(b[:, 2:] - b[:, :2], 2, axis=0).reshape(-1, 4)
            b = b + rng.normal(0, r.jitter, b.shape) * wh
            b = np.clip(np.sort(b.reshape(-1, 2, 2), axis=1).reshape(-1, 4), 0, size)
            n_fp = rng.poisson(r.fp_per_image)
            boxes = np.concatenate([b, _random_boxes(rng, n_fp, size)])
            cls = np.concatenate([t_cls[hit], rng.integers(0, n_classes, n_fp)])
            labels = frozenset() if len(cls) else frozenset({NO_FINDING})
            reads.append(ReaderRead(r.code, boxes, cls, labels))
        images.append(ImageReads(image_id, size, size, reads))
    return images, truth


def f1_against_truth(
    results: Mapping[str, ConsensusResult],
    truth: Mapping[str, tuple[np.ndarray, np.ndarray]],
    iou_thr: float = 0.4,
) -> dict[str, float]:
    """Precision, recall and F1 of consensus boxes against the truth (class-wise)."""
    tp = n_pred = n_true = 0
    for image_id, (t_boxes, t_cls) in truth.items():
        res = results[image_id]
        n_pred += len(res.classes)
        n_true += len(t_cls)
        for c in np.unique(np.concatenate([t_cls, res.classes])).tolist():
            tp += optimal_match_count(res.boxes[res.classes == c], t_boxes[t_cls == c], iou_thr)
    prec = tp / n_pred if n_pred else 0.0
    rec = tp / n_true if n_true else 0.0
    f1 = 2 * tp / (n_pred + n_true) if n_pred + n_true else 0.0
    return {
        "precision": prec, "recall": rec, "f1": f1,
        "tp": tp, "n_pred": n_pred, "n_true": n_true,
    }


#: Two careful readers (few false positives) and one much worse reader.
UNEQUAL_READERS = (
    SimReader("A", 0.8, 0.05, 0.04),
    SimReader("B", 0.8, 0.05, 0.05),
    SimReader("C", 0.2, 1.0, 0.15),
)
#: Same shape, but the good readers' false positives are as frequent as their
#: lone true hits: a lone box is then a coin flip and majority is near-optimal.
NOISY_GOOD_READERS = (
    SimReader("A", 0.9, 0.1, 0.04),
    SimReader("B", 0.85, 0.15, 0.05),
    SimReader("C", 0.3, 1.5, 0.15),
)
