"""``reader_weighted``: weight readers by reliability estimated from the data.

Dawid-Skene / STAPLE-style EM adapted to boxes.  Cross-reader clusters
(``clustering``) are the candidate lesions.  Each candidate is truly a lesion
(z=1) or not (z=0); every reader who read the image either drew a box in the
candidate (o=1) or not (o=0).  Per reader r:

* sensitivity ``p_r = P(o=1 | z=1)``;
* false-alarm rate ``f_r = P(o=1 | z=0)`` (among candidates, i.e. given that
  *someone* drew a box there);
* prior ``pi = P(z=1)``.

E-step: posterior of z per candidate from the readers who read its image.
M-step: posterior-weighted frequencies with a Beta(1, 1) prior (Laplace
smoothing keeps a reader with few reads away from 0 and 1).  Start from
the support fraction (majority vote), iterate to ``tol`` or ``max_iter``.
Estimates are pooled over classes: per class, most readers have too few
boxes for stable rates.

A candidate is kept when its posterior > ``threshold`` (0.5).  The consensus
box is the mean of member boxes weighted by each reader's estimated
precision (posterior-weighted share of their boxes that are true lesions);
the score is the posterior.  Per-reader estimates are in
``self.reader_estimates`` after ``run`` and, for the image's readers, in each
result's ``meta["reader_estimates"]``.

Params: ``iou_thr``/``default_iou_thr`` (as majority), ``threshold`` (0.5),
``max_iter`` (100), ``tol`` (1e-6).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from annotations.consensus.clustering import cluster_boxes, reader_pairs
from annotations.consensus.flat import FlatReads
from annotations.consensus.majority import emit_clusters
from annotations.consensus.params import ParamReader
from annotations.consensus.registry import Strategy, register
from annotations.consensus.types import ConsensusResult, ImageReads

_EPS = 1e-9


def _logit(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, _EPS, 1 - _EPS)
    return np.log(x) - np.log1p(-x)


def em_reliability(
    cand: np.ndarray,
    reader: np.ndarray,
    drew: np.ndarray,
    n_candidates: int,
    n_readers: int,
    init: np.ndarray,
    max_iter: int,
    tol: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, int]:
    """Binary Dawid-Skene EM on a sparse list of (candidate, reader) pairs.

    One pair per reader who read the candidate's image; ``drew`` says whether
    that reader has a box in the candidate.  ``init``: starting posteriors.
    Returns (posterior, sensitivity, false_alarm_rate, prior, iterations).
    """
    o = drew.astype(np.float64)
    post = init.astype(np.float64)
    sens = fa = np.full(n_readers, 0.5)
    prior = 0.5
    it = 0
    while it < max_iter:
        it += 1
        t = post[cand]
        t_read = np.bincount(reader, weights=t, minlength=n_readers)
        t_drew = np.bincount(reader, weights=t * o, minlength=n_readers)
        f_read = np.bincount(reader, weights=1.0 - t, minlength=n_readers)
        f_drew = np.bincount(reader, weights=(1.0 - t) * o, minlength=n_readers)
        sens = (t_drew + 1.0) / (t_read + 2.0)
        fa = (f_drew + 1.0) / (f_read + 2.0)
        prior = float(np.clip(post.mean(), _EPS, 1 - _EPS)) if len(post) else 0.5
        present = np.log(sens) - np.log(fa)
        absent = np.log1p(-sens) - np.log1p(-fa)
        evidence = np.where(drew, present[reader], absent[reader])
        score = _logit(np.array(prior)) + np.bincount(
            cand, weights=evidence, minlength=n_candidates
        )
        new = 1.0 / (1.0 + np.exp(-score))
        delta = float(np.abs(new - post).max(initial=0.0))
        post = new
        if delta < tol:
            break
    return post, sens, fa, prior, it


@register("reader_weighted")
class ReaderWeighted(Strategy):
    learns_from_panel = True

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        super().__init__(params)
        p = ParamReader("reader_weighted", params)
        self.iou_thr = p.class_thresholds()
        self.threshold = p.number("threshold", 0.5, lo=0.0, hi=1.0)
        self.max_iter = int(p.number("max_iter", 100, lo=1, hi=10000))
        self.tol = p.number("tol", 1e-6, lo=0.0, hi=1.0)
        p.done()
        self.reader_estimates: dict[str, dict[str, float]] = {}
        self.em_info: dict[str, Any] = {}

    def run_boxes(self, images: Sequence[ImageReads]) -> dict[str, ConsensusResult]:
        flat = FlatReads.build(images)
        clusters = cluster_boxes(flat, self.iou_thr)
        n_readers = len(flat.readers)
        read_matrix = np.zeros((flat.n_images, n_readers), dtype=bool)
        read_matrix[flat.read_image, flat.read_reader] = True
        k = flat.reads_per_image()[clusters.image]
        cand, pair_reader, drew = reader_pairs(flat, clusters)
        post, sens, fa, prior, iters = em_reliability(
            cand, pair_reader, drew, clusters.n, n_readers,
            clusters.size / np.maximum(k, 1), self.max_iter, self.tol,
        )
        # precision: posterior-weighted share of each reader's boxes that are true
        n_boxes = np.bincount(flat.box_reader, minlength=n_readers).astype(np.float64)
        true_boxes = np.bincount(
            flat.box_reader, weights=post[clusters.cluster_of], minlength=n_readers
        )
        precision = (true_boxes + 1.0) / (n_boxes + 2.0)
        self.reader_estimates = {
            code: {
                "sensitivity": float(sens[r]),
                "false_alarm_rate": float(fa[r]),
                "precision": float(precision[r]),
                "n_boxes": int(n_boxes[r]),
                "n_images": int(read_matrix[:, r].sum()),
            }
            for r, code in enumerate(flat.readers)
        }
        self.em_info = {
            "prior": prior, "iterations": iters, "converged": iters < self.max_iter,
            "n_candidates": clusters.n,
        }
        weights = precision[flat.box_reader]
        boxes = clusters.mean_boxes(flat.boxes, weights) if clusters.n else np.zeros((0, 4))
        keep = post > self.threshold
        est = self.reader_estimates
        readers_of_image = [
            [flat.readers[r] for r in flat.read_reader[lo:hi].tolist()]
            for lo, hi in zip(flat.image_read_start[:-1].tolist(),
                              flat.image_read_start[1:].tolist(), strict=True)
        ]
        return emit_clusters(
            flat, clusters, keep, boxes, post,
            lambda i: {
                "strategy": "reader_weighted",
                "reader_estimates": {c: dict(est[c]) for c in readers_of_image[i]},
            },
        )
