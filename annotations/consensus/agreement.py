"""Inter-reader agreement and reader-vs-consensus metrics (pure numpy + scipy).

* ``pairwise_agreement``: for every pair of readers and every class, over the
  images both read, boxes are matched one-to-one at IoU >= t with an optimal
  matching (maximum number of matches, then maximum total IoU: Hungarian
  algorithm via ``scipy.optimize.linear_sum_assignment`` on weights
  ``K + IoU``, K larger than any possible IoU sum, so cardinality dominates).
  ``tp`` matches; precision = tp / boxes of reader b, recall = tp / boxes of
  reader a (a is the reference), F1 = 2 tp / (n_a + n_b).
* ``fleiss_kappa``: Fleiss' kappa of image-level presence per class (a reader
  "says" class c on an image when they drew at least one c box).  The number
  of raters may vary per image: the generalized formula averages per-image
  agreement P_i = sum_j n_ij (n_ij - 1) / (n_i (n_i - 1)) over images with
  n_i >= 2 raters, and chance agreement uses category proportions pooled over
  all ratings.  With a constant number of raters it is Fleiss (1971) exactly.
* ``reader_vs_consensus``: each reader's sensitivity and precision against a
  consensus, over the images they read (``reader_vs_consensus_by_class``: the same,
  class by class).

Every function takes an optional ``image_ids`` subset and returns dataclasses
whose ``to_dict()`` is JSON-ready.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from annotations.consensus.flat import FlatReads
from annotations.consensus.geometry import pairs_within
from annotations.consensus.params import DEFAULT_IOU_THR, ClassThresholds
from annotations.consensus.types import ConsensusResult, ImageReads
from annotations.geometry import iou_matrix, paired_iou


def _ratio(num: float, den: float) -> float | None:
    return float(num) / float(den) if den else None


@dataclass(frozen=True)
class PairCounts:
    reader_a: str
    reader_b: str
    class_id: int | None  # None: all classes together
    n_images: int
    n_a: int
    n_b: int
    tp: int

    @property
    def precision(self) -> float | None:
        return _ratio(self.tp, self.n_b)

    @property
    def recall(self) -> float | None:
        return _ratio(self.tp, self.n_a)

    @property
    def f1(self) -> float | None:
        return _ratio(2 * self.tp, self.n_a + self.n_b)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "precision": self.precision, "recall": self.recall, "f1": self.f1}


@dataclass(frozen=True)
class KappaResult:
    class_id: int
    kappa: float | None  # None when undefined (no variation at all)
    n_images: int
    n_ratings: int
    observed_agreement: float | None
    chance_agreement: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ReaderVsConsensus:
    reader: str
    n_images: int
    n_reader_boxes: int
    n_consensus_boxes: int
    tp: int

    @property
    def sensitivity(self) -> float | None:
        return _ratio(self.tp, self.n_consensus_boxes)

    @property
    def precision(self) -> float | None:
        return _ratio(self.tp, self.n_reader_boxes)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "sensitivity": self.sensitivity, "precision": self.precision}


def matched_rows(a: np.ndarray, b: np.ndarray, thr: float) -> np.ndarray:
    """Rows of ``a`` in a maximum one-to-one matching of boxes a, b with IoU >= thr
    (ties broken towards higher IoU)."""
    if not len(a) or not len(b):
        return np.zeros(0, dtype=np.int64)
    iou = iou_matrix(a, b)
    ok = iou >= thr
    if not ok.any():
        return np.zeros(0, dtype=np.int64)
    weight = np.where(ok, (min(len(a), len(b)) + 1) + iou, 0.0)
    rows, cols = linear_sum_assignment(weight, maximize=True)
    return rows[ok[rows, cols]].astype(np.int64)


def optimal_match_count(a: np.ndarray, b: np.ndarray, thr: float) -> int:
    """Size of a maximum one-to-one matching of boxes a, b with IoU >= thr."""
    return len(matched_rows(a, b, thr))


def _group_match_counts(
    boxes: np.ndarray, side: np.ndarray, group: np.ndarray, thr: np.ndarray, n_groups: int
) -> np.ndarray:
    """Per group, the optimal match count between its side-0 and side-1 boxes.

    Vectorised fast path: when no box has two candidate partners, every
    candidate edge is in the matching.  Only groups with a conflict run the
    Hungarian algorithm.
    """
    order = np.lexsort((side, group))
    boxes, side, group, thr = boxes[order], side[order], group[order], thr[order]
    starts = np.searchsorted(group, np.arange(n_groups + 1))
    i, j = pairs_within(starts)
    cross = side[i] != side[j]
    i, j = i[cross], j[cross]
    iou = paired_iou(boxes[i], boxes[j])
    ok = iou >= thr[i]
    i, j = i[ok], j[ok]
    counts = np.bincount(group[i], minlength=n_groups)
    degree = np.bincount(np.concatenate([i, j]), minlength=len(group))
    conflict = np.unique(group[degree > 1])
    for g in conflict.tolist():
        lo, hi = starts[g], starts[g + 1]
        s = side[lo:hi]
        counts[g] = optimal_match_count(boxes[lo:hi][s == 0], boxes[lo:hi][s == 1], thr[lo])
    return counts


def _subset(images: Sequence[ImageReads], image_ids: Collection[str] | None):
    if image_ids is None:
        return list(images)
    wanted = set(image_ids)
    return [im for im in images if im.image_id in wanted]


def pairwise_agreement(
    images: Sequence[ImageReads],
    iou_thr: float | Mapping[Any, float] = DEFAULT_IOU_THR,
    image_ids: Collection[str] | None = None,
) -> list[PairCounts]:
    """Counts for every reader pair (a < b) that read a common image, per class
    and for all classes together (``class_id`` None); sorted, deterministic."""
    flat = FlatReads.build(_subset(images, image_ids))
    thresholds = ClassThresholds.parse("agreement", "iou_thr", iou_thr, None)
    n_r = len(flat.readers)
    # reads paired within each image: (a, b) reader pairs with a < b
    ra, rb = pairs_within(flat.image_read_start)
    pair_image = flat.read_image[ra]
    pair_code = flat.read_reader[ra] * n_r + flat.read_reader[rb]
    n_images_pair = np.bincount(pair_code, minlength=n_r * n_r)
    # boxes of each read, duplicated into every read pair of its image
    read_pairs = np.concatenate([np.arange(len(ra)), np.arange(len(ra))])
    read_side = np.concatenate([np.zeros(len(ra), int), np.ones(len(rb), int)])
    read_of = np.concatenate([ra, rb])
    box_start = np.searchsorted(flat.box_read, np.arange(len(flat.read_image) + 1))
    nb = box_start[read_of + 1] - box_start[read_of]
    rep_pair = np.repeat(read_pairs, nb)
    rep_side = np.repeat(read_side, nb)
    box_idx = np.repeat(box_start[read_of], nb) + (
        np.arange(int(nb.sum())) - np.repeat(np.cumsum(nb) - nb, nb)
    )
    cls = flat.box_class[box_idx]
    cls_vals, cls_rank = np.unique(cls, return_inverse=True)
    group = rep_pair * max(len(cls_vals), 1) + cls_rank
    uniq_groups, group_dense = np.unique(group, return_inverse=True)
    tp = _group_match_counts(
        flat.boxes[box_idx], rep_side, group_dense, thresholds.lookup(cls), len(uniq_groups)
    )
    g_pair = uniq_groups // max(len(cls_vals), 1)
    g_cls = cls_vals[uniq_groups % max(len(cls_vals), 1)] if len(cls_vals) else g_pair
    g_code = pair_code[g_pair]
    n_a = np.bincount(group_dense, weights=rep_side == 0, minlength=len(uniq_groups))
    n_b = np.bincount(group_dense, weights=rep_side == 1, minlength=len(uniq_groups))

    table: dict[tuple[int, int | None], list[int]] = {}
    for code, c, t, x, y in zip(
        g_code.tolist(), g_cls.tolist(), tp.tolist(), n_a.tolist(), n_b.tolist(), strict=True
    ):
        for key in ((code, c), (code, None)):
            acc = table.setdefault(key, [0, 0, 0])
            acc[0] += int(x)
            acc[1] += int(y)
            acc[2] += int(t)
    for code in np.unique(pair_code).tolist():
        table.setdefault((code, None), [0, 0, 0])
    del pair_image
    out = [
        PairCounts(
            flat.readers[code // n_r], flat.readers[code % n_r], c,
            int(n_images_pair[code]), v[0], v[1], v[2],
        )
        for (code, c), v in table.items()
    ]
    out.sort(key=lambda p: (p.reader_a, p.reader_b, -1 if p.class_id is None else p.class_id))
    return out


def fleiss_kappa(counts: np.ndarray) -> tuple[float | None, float | None, float | None]:
    """Generalized Fleiss' kappa from an (items, categories) count matrix.

    Returns (kappa, observed agreement P-bar, chance agreement P_e).
    """
    counts = np.asarray(counts, dtype=np.float64)
    n_i = counts.sum(1)
    usable = n_i >= 2
    if not usable.any():
        return None, None, None
    c, n = counts[usable], n_i[usable]
    p_i = (c * (c - 1)).sum(1) / (n * (n - 1))
    p_bar = float(p_i.mean())
    p_j = c.sum(0) / n.sum()
    p_e = float((p_j**2).sum())
    if p_e >= 1.0:
        return None, p_bar, p_e
    return (p_bar - p_e) / (1.0 - p_e), p_bar, p_e


def presence_kappa(
    images: Sequence[ImageReads],
    classes: Sequence[int] | None = None,
    image_ids: Collection[str] | None = None,
) -> list[KappaResult]:
    """Fleiss' kappa per class on "did the reader mark this class on the image"."""
    flat = FlatReads.build(_subset(images, image_ids))
    if classes is None:
        classes = np.unique(flat.box_class).tolist()
    raters = flat.reads_per_image().astype(np.float64)
    out = []
    for c in classes:
        sel = flat.box_class == c
        has = np.zeros(len(flat.read_image), dtype=bool)
        has[flat.box_read[sel]] = True
        yes = np.bincount(flat.read_image[has], minlength=flat.n_images).astype(np.float64)
        kappa, p_bar, p_e = fleiss_kappa(np.stack([yes, raters - yes], axis=1))
        out.append(KappaResult(
            int(c), kappa, int((raters >= 2).sum()), int(raters[raters >= 2].sum()), p_bar, p_e
        ))
    return out


@dataclass(frozen=True)
class _VsCounts:
    """Per (reader, class) counts of ``_reader_consensus_counts``, ``[reader, class]``."""

    readers: list[str]
    images: np.ndarray  # images where the class is on either side (all classes: read)
    own: np.ndarray
    cons: np.ndarray
    tp: np.ndarray
    images_read: np.ndarray  # per reader: images read that have a consensus


def _reader_consensus_counts(images: Sequence[ImageReads],
                             consensus: Mapping[str, ConsensusResult],
                             iou_thr: float | Mapping[Any, float],
                             image_ids: Collection[str] | None) -> _VsCounts:
    """Every read paired with its image's consensus boxes, matched one-to-one per class
    (tp = optimal class-wise IoU matches), counted per reader and class in one pass."""
    images = [im for im in _subset(images, image_ids) if im.image_id in consensus]
    flat = FlatReads.build(images)
    thresholds = ClassThresholds.parse("agreement", "iou_thr", iou_thr, None)
    cons = [consensus[i] for i in flat.image_ids]
    c_count = np.array([len(r.classes) for r in cons], dtype=np.int64)
    c_boxes = np.concatenate([r.boxes for r in cons]) if cons else np.zeros((0, 4))
    c_cls = np.concatenate([r.classes for r in cons]) if cons else np.zeros(0, np.int64)
    n_reads = len(flat.read_image)
    c_start = np.concatenate(([0], np.cumsum(c_count)))
    k = c_count[flat.read_image]
    c_rows = np.repeat(c_start[flat.read_image], k) + (
        np.arange(int(k.sum())) - np.repeat(np.cumsum(k) - k, k)
    )
    c_read = np.repeat(np.arange(n_reads), k)
    boxes = np.concatenate([flat.boxes, c_boxes[c_rows]])
    cls = np.concatenate([flat.box_class, c_cls[c_rows]])
    read = np.concatenate([flat.box_read, c_read])
    side = np.concatenate([np.zeros(len(flat.box_class), int), np.ones(len(c_rows), int)])
    n_cls = int(cls.max(initial=0)) + 1
    group = read * n_cls + cls
    uniq, dense = np.unique(group, return_inverse=True)
    tp = _group_match_counts(boxes, side, dense, thresholds.lookup(cls), len(uniq))
    n_r = len(flat.readers)
    reader_of_read = np.asarray(flat.read_reader, dtype=np.int64)
    size = n_r * n_cls

    def per(cell: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(cell, weights=weights, minlength=size).reshape(n_r, n_cls)

    group_cell = reader_of_read[uniq // n_cls] * n_cls + uniq % n_cls
    return _VsCounts(
        readers=list(flat.readers),
        images=per(group_cell).astype(np.int64),
        own=per(flat.box_reader * n_cls + flat.box_class).astype(np.int64),
        cons=per(reader_of_read[c_read] * n_cls + c_cls[c_rows]).astype(np.int64),
        tp=per(group_cell, tp).astype(np.int64),
        images_read=np.bincount(reader_of_read, minlength=n_r).astype(np.int64),
    )


def _overall(c: _VsCounts) -> list[ReaderVsConsensus]:
    return [ReaderVsConsensus(code, int(c.images_read[r]), int(c.own[r].sum()),
                              int(c.cons[r].sum()), int(c.tp[r].sum()))
            for r, code in enumerate(c.readers)]


def _by_class(c: _VsCounts) -> dict[int, list[ReaderVsConsensus]]:
    return {cid: [ReaderVsConsensus(code, int(c.images[r, cid]), int(c.own[r, cid]),
                                    int(c.cons[r, cid]), int(c.tp[r, cid]))
                  for r, code in enumerate(c.readers) if c.images[r, cid]]
            for cid in np.flatnonzero(c.images.sum(axis=0)).tolist()}


def reader_vs_consensus(
    images: Sequence[ImageReads],
    consensus: Mapping[str, ConsensusResult],
    iou_thr: float | Mapping[Any, float] = DEFAULT_IOU_THR,
    image_ids: Collection[str] | None = None,
) -> list[ReaderVsConsensus]:
    """Each reader against the consensus (tp = optimal class-wise IoU matches)."""
    return _overall(_reader_consensus_counts(images, consensus, iou_thr, image_ids))


def reader_vs_consensus_by_class(
    images: Sequence[ImageReads],
    consensus: Mapping[str, ConsensusResult],
    iou_thr: float | Mapping[Any, float] = DEFAULT_IOU_THR,
    image_ids: Collection[str] | None = None,
) -> tuple[list[ReaderVsConsensus], dict[int, list[ReaderVsConsensus]]]:
    """``reader_vs_consensus``'s rows, and class id -> each reader against the consensus
    in that class alone, from one matching.

    A class's rows count the images where this reader drew the class or the consensus
    has it (another reader's box of the class alone does not count the image for this
    one); a class no reader and no consensus has is absent.  Per reader, the same
    numbers as ``reader_vs_consensus`` on that reader's reads and the consensus cut
    down to one class and to those images."""
    counts = _reader_consensus_counts(images, consensus, iou_thr, image_ids)
    return _overall(counts), _by_class(counts)


def image_agreement(image: ImageReads, iou_thr: float = DEFAULT_IOU_THR) -> float | None:
    """One number for "how much do this image's readers agree", in [0, 1].

    The mean, over reader pairs, of the class-wise IoU-matched F1 of their
    boxes; a pair where both readers drew nothing agrees fully (1.0).  None
    with fewer than two readers.  Used to route images to adjudication.
    """
    reads = image.reads
    if len(reads) < 2:
        return None
    scores = []
    for a_idx in range(len(reads)):
        for b_idx in range(a_idx + 1, len(reads)):
            a, b = reads[a_idx], reads[b_idx]
            total = len(a.classes) + len(b.classes)
            if total == 0:
                scores.append(1.0)
                continue
            tp = sum(
                optimal_match_count(a.boxes[a.classes == c], b.boxes[b.classes == c], iou_thr)
                for c in np.intersect1d(a.classes, b.classes).tolist()
            )
            scores.append(2.0 * tp / total)
    return float(np.mean(scores))
