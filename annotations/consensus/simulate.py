"""Simulated reader panels with known truth, to compare strategies honestly.

Real data has no ground truth, so "does reader modelling help?" is answered on
synthetic reads: truth lesions per image (Poisson, uniform classes), and a
panel of readers of whom ``k`` read each image (VinDr-CXR: 3 of 17).  Each
reader misses lesions (sensitivity, optionally per class), adds false
positives (Poisson per image, classes uniform), jitters box edges (a fraction
of the box size) and may box loosely (every box scaled about its centre).
A reader may have a quota of reads (a newcomer with 30 reads).  Seeded, hence
reproducible.  ``PanelTruth`` keeps what each reader actually did, so an
estimate can be checked against the realised rates as well as the parameters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from annotations.consensus.agreement import matched_rows, optimal_match_count
from annotations.consensus.types import ConsensusResult, ImageReads, ReaderRead
from annotations.taxonomy import NO_FINDING


@dataclass(frozen=True)
class SimReader:
    """One simulated reader.  ``sensitivity`` is a number or one value per class."""

    code: str
    sensitivity: float | tuple[float, ...]
    fp_per_image: float
    jitter: float  # std of edge noise as a fraction of box width/height
    looseness: float = 1.0  # box width and height multiplied by this about the centre
    max_reads: int | None = None  # stop assigning this reader after so many reads

    def sensitivity_of(self, classes: np.ndarray) -> np.ndarray:
        s = np.asarray(self.sensitivity, dtype=np.float64)
        return np.full(len(classes), float(s)) if s.ndim == 0 else s[classes]


@dataclass
class PanelTruth:
    """Hidden truth of a simulated panel.

    ``boxes[image_id] = (boxes, classes)``; per reader: images read, true
    lesions seen (per class), lesions hit (per class) and false positives.
    """

    n_classes: int
    boxes: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    reads: dict[str, int] = field(default_factory=dict)
    lesions: dict[str, np.ndarray] = field(default_factory=dict)
    hits: dict[str, np.ndarray] = field(default_factory=dict)
    false_positives: dict[str, np.ndarray] = field(default_factory=dict)

    def realised(self, code: str) -> dict[str, float]:
        """What the reader actually did: sensitivity and false positives per image."""
        n = max(self.reads.get(code, 0), 1)
        les = self.lesions[code].sum()
        return {
            "sensitivity": float(self.hits[code].sum() / les) if les else float("nan"),
            "fp_per_image": float(self.false_positives[code].sum() / n),
            "reads": self.reads.get(code, 0),
        }


def _random_boxes(rng: np.random.Generator, n: int, size: float) -> np.ndarray:
    wh = rng.uniform(0.05, 0.25, (n, 2)) * size
    xy = rng.uniform(0, 1, (n, 2)) * (size - wh)
    return np.concatenate([xy, xy + wh], axis=1)


def _drawn(rng: np.random.Generator, r: SimReader, b: np.ndarray, size: float) -> np.ndarray:
    """A reader's version of true boxes ``b``: loose, jittered, sorted, clipped."""
    centre, wh = (b[:, :2] + b[:, 2:]) / 2, (b[:, 2:] - b[:, :2]) * r.looseness
    b = np.concatenate([centre - wh / 2, centre + wh / 2], axis=1)
    b = b + rng.normal(0, r.jitter, b.shape) * np.tile(wh, 2)
    return np.clip(np.sort(b.reshape(-1, 2, 2), axis=1).reshape(-1, 4), 0, size)


def simulate_panel(
    readers: Sequence[SimReader],
    k: int | None = None,
    n_images: int = 2000,
    n_classes: int = 3,
    lesion_rate: float = 1.0,
    size: float = 1024.0,
    seed: int = 0,
) -> tuple[list[ImageReads], PanelTruth]:
    """Reads of ``n_images`` by ``k`` readers each (all readers when ``k`` is None)."""
    rng = np.random.default_rng(seed)
    k = len(readers) if k is None else k
    truth = PanelTruth(n_classes)
    for r in readers:
        truth.reads[r.code] = 0
        truth.lesions[r.code] = np.zeros(n_classes, dtype=np.int64)
        truth.hits[r.code] = np.zeros(n_classes, dtype=np.int64)
        truth.false_positives[r.code] = np.zeros(n_classes, dtype=np.int64)
    images = []
    for i in range(n_images):
        image_id = f"sim{i:06d}"
        n_true = rng.poisson(lesion_rate)
        t_boxes = _random_boxes(rng, n_true, size)
        t_cls = rng.integers(0, n_classes, n_true)
        truth.boxes[image_id] = (t_boxes, t_cls)
        free = [r for r in readers if r.max_reads is None or truth.reads[r.code] < r.max_reads]
        panel = (free if k >= len(free) else
                 [free[j] for j in sorted(rng.choice(len(free), k, replace=False))])
        reads = []
        for r in panel:
            hit = rng.random(n_true) < r.sensitivity_of(t_cls)
            n_fp = rng.poisson(r.fp_per_image)
            fp_cls = rng.integers(0, n_classes, n_fp)
            boxes = np.concatenate([_drawn(rng, r, t_boxes[hit], size),
                                    _random_boxes(rng, n_fp, size)])
            cls = np.concatenate([t_cls[hit], fp_cls])
            labels = frozenset() if len(cls) else frozenset({NO_FINDING})
            reads.append(ReaderRead(r.code, boxes, cls, labels))
            truth.reads[r.code] += 1
            truth.lesions[r.code] += np.bincount(t_cls, minlength=n_classes)
            truth.hits[r.code] += np.bincount(t_cls[hit], minlength=n_classes)
            truth.false_positives[r.code] += np.bincount(fp_cls, minlength=n_classes)
        images.append(ImageReads(image_id, size, size, reads))
    return images, truth


def simulate(
    readers: Sequence[SimReader],
    n_images: int = 2000,
    n_classes: int = 3,
    lesion_rate: float = 1.0,
    size: float = 1024.0,
    seed: int = 0,
) -> tuple[list[ImageReads], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Every reader reads every image; returns (reads, truth boxes per image)."""
    images, truth = simulate_panel(readers, None, n_images, n_classes, lesion_rate, size, seed)
    return images, truth.boxes


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


def scored_against_truth(
    results: Mapping[str, ConsensusResult],
    truth: Mapping[str, tuple[np.ndarray, np.ndarray]],
    iou_thr: float = 0.4,
) -> tuple[np.ndarray, np.ndarray]:
    """(score, is_true) for every consensus box: matched one-to-one to a true lesion
    of its class at IoU >= ``iou_thr`` (maximum matching, as ``f1_against_truth``)."""
    scores, hits = [], []
    for image_id, (t_boxes, t_cls) in truth.items():
        res = results[image_id]
        matched = np.zeros(len(res.classes), dtype=bool)
        for c in np.unique(res.classes).tolist():
            idx = np.flatnonzero(res.classes == c)
            matched[idx[matched_rows(res.boxes[idx], t_boxes[t_cls == c], iou_thr)]] = True
        scores.append(res.scores)
        hits.append(matched)
    return np.concatenate(scores) if scores else np.zeros(0), (
        np.concatenate(hits) if hits else np.zeros(0, dtype=bool))


def calibration(
    prob: np.ndarray, outcome: np.ndarray, bins: int = 10
) -> tuple[float, list[tuple[float, float, int]]]:
    """Expected calibration error and the reliability curve (mean p, frequency, n) per bin."""
    prob, outcome = np.asarray(prob, dtype=float), np.asarray(outcome, dtype=float)
    which = np.minimum((prob * bins).astype(int), bins - 1)
    curve, ece = [], 0.0
    for b in range(bins):
        sel = which == b
        if not sel.any():
            continue
        p, f = float(prob[sel].mean()), float(outcome[sel].mean())
        curve.append((p, f, int(sel.sum())))
        ece += sel.sum() / max(len(prob), 1) * abs(p - f)
    return float(ece), curve
