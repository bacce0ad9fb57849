"""EM for the reader model: per reader and class, sensitivity and false positives.

The generative model (what ``reader_model`` assumes about a panel):

* true lesions of class k occur in an image as a Poisson process of rate
  ``mu[k]`` per image;
* reader r, reading the image, draws each true lesion of class k with
  probability ``sens[r, k]`` (independently of the other readers), and adds
  false positives of class k as a Poisson process of rate ``fp[r, k]`` per
  image, placed like lesions are;
* two readers' false positives fall on the same spot (IoU >= the threshold)
  with probability ``q[k]``, measured from the data (``coincidence``).

A candidate is a cross-reader cluster (``clustering``): at most one box per
reader.  Its likelihood as a true lesion is ``mu * prod(sens of those who
drew) * prod(1 - sens of the others who read the image)``; as false positives
``prod(fp of those who drew) * q ** (size - 1)``.  Lesions that every reader
of an image missed are not seen at all; EM accounts for them (the expected
number of unseen lesions enters both ``mu`` and every reader's denominator),
which is what removes the downward bias of sensitivity estimated from the
candidates alone.

Priors make readers with few reads shrink to the panel: a reader's
sensitivity for a class is pulled towards ``logit(reader's pooled
sensitivity) + logit(panel's class sensitivity) - logit(panel's)`` with
``prior_strength`` pseudo-lesions (a Beta prior), the pooled and class values
themselves towards the panel's; false-positive rates likewise with Gamma
priors of ``prior_fp`` pseudo false positives.  The M-step returns these
posterior modes; the counts behind them give the intervals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from annotations.geometry import paired_iou

_EPS = 1e-9


@dataclass(frozen=True, eq=False)
class Candidates:
    """Clusters as EM input: everything indexed densely (classes 0..K-1)."""

    n_images: int
    n_readers: int
    n_classes: int
    cls: np.ndarray  # (C,) class of each candidate
    size: np.ndarray  # (C,) readers who drew it
    pair_cand: np.ndarray  # (P,) one row per (candidate, reader of its image)
    pair_reader: np.ndarray
    pair_drew: np.ndarray  # (P,) bool
    member_cand: np.ndarray  # (M,) one row per box in a candidate
    member_reader: np.ndarray
    read_image: np.ndarray  # (R,) one row per read
    read_reader: np.ndarray


@dataclass(frozen=True, eq=False)
class ReaderFit:
    """EM result.  ``*_counts`` are the expected counts behind each estimate."""

    post: np.ndarray  # (C,) P(candidate is a true lesion)
    sens: np.ndarray  # (R, K)
    fp: np.ndarray  # (R, K) false positives per image
    mu: np.ndarray  # (K,) true lesions per image
    unseen: np.ndarray  # (I, K) expected lesions nobody drew
    hits: np.ndarray  # (R, K) expected true lesions drawn
    lesions: np.ndarray  # (R, K) expected true lesions in the reader's images
    fp_counts: np.ndarray  # (R, K) expected false positives drawn
    n_reads: np.ndarray  # (R,)
    sens_prior: np.ndarray  # (R, K) prior means (the shrinkage targets)
    fp_prior: np.ndarray  # (R, K)
    iterations: int
    converged: bool


def _logit(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, _EPS, 1 - _EPS)
    return np.log(x) - np.log1p(-x)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _grid(rows: np.ndarray, cols: np.ndarray, weights: np.ndarray, shape: tuple[int, int]):
    flat = np.bincount(rows * shape[1] + cols, weights=weights, minlength=shape[0] * shape[1])
    return flat.astype(np.float64).reshape(shape)


def fit_readers(
    c: Candidates,
    q: np.ndarray,
    *,
    prior_strength: float = 10.0,
    prior_fp: float = 2.0,
    max_iter: int = 200,
    tol: float = 1e-6,
) -> ReaderFit:
    """Run EM from the support fraction (majority's view) to convergence."""
    R, K = c.n_readers, c.n_classes
    k_of = np.bincount(c.pair_cand, minlength=len(c.cls))
    post = np.clip(c.size / np.maximum(k_of, 1), 0.05, 0.95)
    n_reads = np.bincount(c.read_reader, minlength=R).astype(np.float64)
    cls_pair, cls_member = c.cls[c.pair_cand], c.cls[c.member_cand]
    log_q = np.log(np.clip(q, 1e-6, 1.0))
    m, a = prior_strength, prior_fp
    sens = np.full((R, K), 0.5)
    mu = np.full(K, max(float(post.sum()), 1.0) / max(c.n_images, 1) / max(K, 1))
    # image x reader incidence of the reads (each image's panel), for the unseen lesions
    reads = sparse.csr_matrix((np.ones(len(c.read_image)), (c.read_image, c.read_reader)),
                              shape=(c.n_images, R))
    converged, it = False, 0
    while it < max_iter:
        it += 1
        # M-step (from the current posteriors and the unseen lesions they imply)
        unseen = _unseen(reads, sens, mu)
        hits = _grid(c.member_reader, cls_member, post[c.member_cand], (R, K))
        lesions = _grid(c.pair_reader, cls_pair, post[c.pair_cand], (R, K))
        lesions += reads.T @ unseen
        fp_counts = _grid(c.member_reader, cls_member, 1.0 - post[c.member_cand], (R, K))
        mu = (np.bincount(c.cls, weights=post, minlength=K) + unseen.sum(axis=0) + 0.01) / (
            max(c.n_images, 1) + 1.0)
        sens_prior = _sens_targets(hits, lesions, m)
        sens = np.clip((hits + m * sens_prior) / (lesions + m), 1e-4, 1 - 1e-4)
        fp_prior = _fp_targets(fp_counts, n_reads, a)
        fp = np.maximum((fp_counts + a) / (n_reads[:, None] + a / fp_prior), 1e-6)
        # E-step
        log_s, log_1s, log_fp = np.log(sens), np.log1p(-sens), np.log(fp)
        evidence = np.where(c.pair_drew, log_s[c.pair_reader, cls_pair],
                            log_1s[c.pair_reader, cls_pair])
        true_ll = np.log(mu)[c.cls] + np.bincount(c.pair_cand, weights=evidence,
                                                  minlength=len(c.cls))
        false_ll = np.bincount(c.member_cand, weights=log_fp[c.member_reader, cls_member],
                               minlength=len(c.cls)) + (c.size - 1) * log_q[c.cls]
        new = _sigmoid(true_ll - false_ll)
        delta = float(np.abs(new - post).max(initial=0.0))
        post = new
        if delta < tol:
            converged = True
            break
    unseen = _unseen(reads, sens, mu)
    return ReaderFit(
        post=post, sens=sens, fp=fp, mu=mu, unseen=unseen, hits=hits, lesions=lesions,
        fp_counts=fp_counts, n_reads=n_reads, sens_prior=sens_prior, fp_prior=fp_prior,
        iterations=it, converged=converged,
    )


def _unseen(reads: sparse.csr_matrix, sens: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """Expected lesions per image and class that none of the image's readers drew."""
    return mu[None, :] * np.exp(reads @ np.log1p(-sens))


def _sens_targets(hits: np.ndarray, lesions: np.ndarray, m: float) -> np.ndarray:
    """Shrinkage targets: reader's pooled skill plus the panel's class offset."""
    panel = (hits.sum() + 1.0) / (lesions.sum() + 2.0)
    reader = (hits.sum(axis=1) + m * panel) / (lesions.sum(axis=1) + m)
    klass = (hits.sum(axis=0) + m * panel) / (lesions.sum(axis=0) + m)
    return _sigmoid(_logit(reader)[:, None] + _logit(klass)[None, :] - _logit(np.array(panel)))


def _fp_targets(fp_counts: np.ndarray, n_reads: np.ndarray, a: float) -> np.ndarray:
    """Shrinkage targets: reader's pooled rate times the panel's class share."""
    K = fp_counts.shape[1]
    panel = (fp_counts.sum() + a) / (n_reads.sum() + a / 0.1)
    reader = (fp_counts.sum(axis=1) + a) / (n_reads + a / panel)
    klass = (fp_counts.sum(axis=0) + a) / (n_reads.sum() + a * K / panel)
    return np.maximum(reader[:, None] * klass[None, :] / panel, 1e-6)


def coincidence(
    norm_boxes: np.ndarray, box_image: np.ndarray, box_cls: np.ndarray, n_classes: int,
    thr: np.ndarray, max_pairs: int = 20000,
) -> np.ndarray:
    """P(two boxes of a class from different images overlap at IoU >= thr), per class.

    Boxes of other images stand in for false positives placed independently;
    the pairing is a fixed permutation of the canonical box order, so the
    estimate is deterministic.  Few pairs (a rare class) give the pooled value.
    """
    rng = np.random.default_rng(0)
    out = np.full(n_classes, np.nan)
    hits_all = pairs_all = 0
    for k in range(n_classes):
        idx = np.flatnonzero(box_cls == k)
        if len(idx) < 2:
            continue
        perm = idx[rng.permutation(len(idx))]
        a, b = perm[:-1][:max_pairs], perm[1:][:max_pairs]
        other = box_image[a] != box_image[b]
        a, b = a[other], b[other]
        if not len(a):
            continue
        hit = paired_iou(norm_boxes[a], norm_boxes[b]) >= thr[k]
        hits_all += int(hit.sum())
        pairs_all += len(a)
        if len(a) >= 50:
            out[k] = (hit.sum() + 0.5) / (len(a) + 1.0)
    pooled = (hits_all + 0.5) / (pairs_all + 1.0)
    return np.clip(np.where(np.isnan(out), pooled, out), 1e-3, 1.0)
