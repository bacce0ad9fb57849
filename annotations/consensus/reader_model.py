"""``reader_model``: consensus that learns each reader's skill per class.

Cross-reader clusters (``clustering``) are the candidate findings.  A
probabilistic model of the panel (``reader_em``: per reader and class,
sensitivity and false positives per image; lesions nobody drew accounted for;
readers with few reads shrunk to the panel) gives every candidate a posterior
probability that the finding is real.  A localisation model
(``localisation``: each reader's box-size bias and edge noise) fuses the
members into one box.

Which candidates are kept: by default the set that maximises the *expected*
F1 against the truth under the posterior (sort by posterior, keep the top
``n`` maximising ``2 * sum(p_top) / (n + expected true findings)``), because
a fixed 0.5 cut is F1-optimal only when precision and recall happen to
balance; ``decision="threshold"`` keeps posterior > ``threshold`` instead.

Output per box: the score is the posterior.  Per image ``meta``:
``p_error`` (probability that at least one kept box is false or one dropped
candidate is real: what adjudication can fix), ``expected_errors`` and
``expected_missed`` (lesions every reader of the image is expected to have
missed).  After ``run``, ``reader_estimates`` holds per reader, pooled and per
class, sensitivity and false positives per image with 95% intervals, box-size
bias and noise; ``fit_info`` the panel parameters.

Params: ``iou_thr``/``default_iou_thr`` (as majority), ``decision``
("expected_f1" or "threshold"), ``threshold`` (0.5), ``prior_strength``
(pseudo-lesions, 10), ``prior_fp`` (pseudo false positives, 2), ``max_iter``
(200), ``tol`` (1e-5, on any posterior).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from annotations.consensus.clustering import Clusters, cluster_boxes, reader_pairs
from annotations.consensus.flat import FlatReads
from annotations.consensus.localisation import Localisation, fit_localisation, fused_boxes
from annotations.consensus.majority import emit_clusters
from annotations.consensus.params import ParamReader
from annotations.consensus.reader_em import Candidates, ReaderFit, coincidence, fit_readers
from annotations.consensus.registry import Strategy, register
from annotations.consensus.types import ConsensusResult, ImageReads

DECISIONS = ("expected_f1", "threshold")
_BIAS_PASSES = 4


def _rescaled(norm: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """Boxes scaled about their centres by ``factor`` (one per box)."""
    centre, half = (norm[:, :2] + norm[:, 2:]) / 2, (norm[:, 2:] - norm[:, :2]) / 2
    half = half * factor[:, None]
    return np.concatenate([centre - half, centre + half], axis=1)


def _with_boxes(flat: FlatReads, boxes: np.ndarray) -> FlatReads:
    return dataclasses.replace(flat, boxes=boxes)


def expected_f1_keep(post: np.ndarray, expected_true: float) -> np.ndarray:
    """Keep mask maximising expected F1 (ties at the cut kept together)."""
    if not len(post):
        return np.zeros(0, dtype=bool)
    order = np.sort(post)[::-1]
    ef1 = 2 * np.cumsum(order) / (np.arange(1, len(order) + 1) + max(expected_true, 1e-9))
    best = int(np.argmax(ef1))
    return post >= order[best]


def image_errors(post: np.ndarray, keep: np.ndarray, image: np.ndarray, n_images: int):
    """Per image: P(at least one candidate decided wrongly), expected wrong decisions."""
    p_right = np.clip(np.where(keep, post, 1.0 - post), 1e-12, 1.0)
    log_right = np.bincount(image, weights=np.log(p_right), minlength=n_images)
    expected = np.bincount(image, weights=1.0 - p_right, minlength=n_images)
    return 1.0 - np.exp(log_right), expected


def _interval(dist: Any) -> list[float]:
    return [float(x) for x in dist.ppf([0.025, 0.975])]


@register("reader_model")
class ReaderModel(Strategy):
    default_image_method = "reader_model"
    learns_from_panel = True

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        super().__init__(params)
        p = ParamReader("reader_model", params)
        self.iou_thr = p.class_thresholds()
        self.decision = p.choice("decision", "expected_f1", DECISIONS)
        self.threshold = p.number("threshold", 0.5, lo=0.0, hi=1.0)
        self.prior_strength = p.number("prior_strength", 10.0, lo=0.0, hi=1e6)
        self.prior_fp = p.number("prior_fp", 2.0, lo=1e-3, hi=1e6)
        self.max_iter = int(p.number("max_iter", 200, lo=1, hi=10000))
        self.tol = p.number("tol", 1e-5, lo=0.0, hi=1.0)
        p.done()
        self.reader_estimates: dict[str, dict[str, Any]] = {}
        self.fit_info: dict[str, Any] = {}
        self.fit: ReaderFit | None = None

    def run_boxes(self, images: Sequence[ImageReads]) -> dict[str, ConsensusResult]:
        flat = FlatReads.build(images)
        class_ids = np.unique(flat.box_class)
        sx, sy = flat.image_scale()
        scale = np.stack([sx, sy, sx, sy], axis=1)
        raw = flat.boxes / scale[flat.box_image] if len(flat.boxes) else np.zeros((0, 4))
        thr = self.iou_thr.lookup(class_ids)
        dense_cls = np.searchsorted(class_ids, flat.box_class)
        q = coincidence(raw, flat.box_image, dense_cls, len(class_ids), thr)
        # A reader who boxes loosely (or tightly) may fail to cluster with the
        # others at all; so: cluster, fit, learn each reader's size bias, undo
        # it, and cluster again until the biases settle.
        bias = np.zeros(len(flat.readers))
        for _ in range(_BIAS_PASSES):
            norm = _rescaled(raw, np.exp(-bias)[flat.box_reader])
            clusters = cluster_boxes(_with_boxes(flat, norm), self.iou_thr)
            cand = _candidates(flat, clusters, class_ids)
            fit = fit_readers(cand, q, prior_strength=self.prior_strength,
                              prior_fp=self.prior_fp, max_iter=self.max_iter, tol=self.tol)
            loc = fit_localisation(norm, clusters.members, cand.member_cand,
                                   cand.member_reader, cand.size, fit.post, cand.n_readers)
            bias = bias + loc.bias
            if float(np.abs(loc.bias).max(initial=0.0)) < 0.01:
                break
        boxes = (fused_boxes(norm, clusters.members, cand.member_cand, cand.member_reader,
                             clusters.n, loc) * scale[clusters.image]) if clusters.n \
            else np.zeros((0, 4))
        loc = Localisation(bias=bias, noise=loc.noise, n_boxes=loc.n_boxes)
        expected_true = float(fit.post.sum() + fit.unseen.sum())
        keep = (expected_f1_keep(fit.post, expected_true) if self.decision == "expected_f1"
                else fit.post > self.threshold)
        p_error, expected = image_errors(fit.post, keep, clusters.image, flat.n_images)
        missed = fit.unseen.sum(axis=1)
        self.fit = fit
        self.reader_estimates = _estimates(flat, fit, loc, class_ids, self.prior_strength,
                                           self.prior_fp)
        cut = float(fit.post[keep].min()) if keep.any() else 1.0
        self.fit_info = {
            "iterations": fit.iterations, "converged": fit.converged,
            "n_candidates": clusters.n, "kept": int(keep.sum()), "cut": cut,
            "lesions_per_image": {str(c): float(m) for c, m in zip(
                class_ids.tolist(), fit.mu.tolist(), strict=True)},
            "coincidence": {str(c): float(v) for c, v in zip(
                class_ids.tolist(), q.tolist(), strict=True)},
            "expected_missed": float(missed.sum()),
        }
        return emit_clusters(
            flat, clusters, keep, boxes, fit.post,
            lambda i: {
                "strategy": "reader_model",
                "p_error": round(float(p_error[i]), 6),
                "expected_errors": round(float(expected[i]), 6),
                "expected_missed": round(float(missed[i]), 6),
            },
        )


def _candidates(flat: FlatReads, clusters: Clusters, class_ids: np.ndarray) -> Candidates:
    pair_cand, pair_reader, drew = reader_pairs(flat, clusters)
    member_cand = np.repeat(np.arange(clusters.n), clusters.size)
    return Candidates(
        n_images=flat.n_images, n_readers=len(flat.readers), n_classes=len(class_ids),
        cls=np.searchsorted(class_ids, clusters.cls), size=clusters.size,
        pair_cand=pair_cand, pair_reader=pair_reader, pair_drew=drew,
        member_cand=member_cand, member_reader=flat.box_reader[clusters.members],
        read_image=flat.read_image, read_reader=flat.read_reader,
    )


def _estimates(
    flat: FlatReads, fit: ReaderFit, loc: Localisation, class_ids: np.ndarray,
    m: float, a: float,
) -> dict[str, dict[str, Any]]:
    """Per reader: pooled and per-class estimates with 95% intervals.

    Intervals come from the Beta / Gamma posteriors of the final M-step's
    expected counts, so they leave out the uncertainty of the latent truth
    itself (narrow where readers disagree a lot).
    """
    hits, lesions, fpc, n = fit.hits, fit.lesions, fit.fp_counts, fit.n_reads
    panel_s = float((hits.sum() + 1.0) / (lesions.sum() + 2.0))
    panel_fp = float(fpc.sum() / max(n.sum(), 1.0))
    n_boxes = np.bincount(flat.box_reader, minlength=len(flat.readers))
    out: dict[str, dict[str, Any]] = {}
    for r, code in enumerate(flat.readers):
        h, les, f = float(hits[r].sum()), float(lesions[r].sum()), float(fpc[r].sum())
        s_a, s_b = h + m * panel_s, les - h + m * (1 - panel_s)
        fp_shape, fp_rate = f + a, n[r] + a / max(panel_fp, 1e-6)
        per_class = {}
        for j, cid in enumerate(class_ids.tolist()):
            t, tf = fit.sens_prior[r, j], fit.fp_prior[r, j]
            cb = stats.beta(hits[r, j] + m * t + 1e-9, lesions[r, j] - hits[r, j] + m * (1 - t)
                            + 1e-9)
            cg = stats.gamma(fpc[r, j] + a, scale=1.0 / (n[r] + a / tf))
            per_class[str(cid)] = {
                "sensitivity": float(fit.sens[r, j]), "sensitivity_ci": _interval(cb),
                "fp_per_image": float(fit.fp[r, j]), "fp_per_image_ci": _interval(cg),
                "lesions": round(float(lesions[r, j]), 3),
            }
        out[code] = {
            "sensitivity": s_a / (s_a + s_b),
            "sensitivity_ci": _interval(stats.beta(s_a, s_b)),
            "fp_per_image": fp_shape / fp_rate,
            "fp_per_image_ci": _interval(stats.gamma(fp_shape, scale=1.0 / fp_rate)),
            "n_images": int(n[r]), "n_boxes": int(n_boxes[r]),
            "box_scale": float(np.exp(loc.bias[r])), "box_noise": float(np.sqrt(loc.noise[r])),
            "per_class": per_class,
        }
    return out
