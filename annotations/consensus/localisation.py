"""Localisation model: each reader's box-size bias and edge noise, and fused boxes.

A reader's box around a lesion is the lesion's box, scaled about its centre by
``exp(bias[r])`` (a loose reader has bias > 0) and jittered with a noise of
variance ``noise[r]`` (in units of the box size; centre offsets and log sizes
pooled).  Biases are relative: the panel's median reader defines the size of
a lesion, since nothing else can.

Estimation (a few fixed-point passes): for every box in a candidate with at
least two readers, compare it with the fused box of the *other* members
(leave one out, so a reader does not confirm themselves); the mean log size
ratio is the bias, the residual spread minus the other members' own fused
variance is the noise.  Both shrink to the panel with pseudo-observations.
The fused box of a candidate is then the inverse-noise weighted mean of its
members' bias-corrected centres and log sizes: a careful reader pulls
harder, a loose reader's box is shrunk back before it counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_MIN_SIZE = 1e-6


@dataclass(frozen=True, eq=False)
class Localisation:
    bias: np.ndarray  # (R,) log scale of the reader's boxes against the panel's
    noise: np.ndarray  # (R,) variance of centre offsets / log sizes
    n_boxes: np.ndarray  # (R,) boxes in multi-reader candidates behind the estimate


def _params(norm: np.ndarray) -> np.ndarray:
    """(n, 4) boxes -> (cx, cy, log w, log h)."""
    wh = np.maximum(norm[:, 2:] - norm[:, :2], _MIN_SIZE)
    return np.concatenate([(norm[:, :2] + norm[:, 2:]) / 2, np.log(wh)], axis=1)


def fit_localisation(
    norm: np.ndarray,
    member: np.ndarray,
    member_cand: np.ndarray,
    member_reader: np.ndarray,
    size: np.ndarray,
    weight: np.ndarray,
    n_readers: int,
    passes: int = 4,
    prior_boxes: float = 10.0,
) -> Localisation:
    """``member``: box rows of candidate members; ``weight``: P(true) per candidate."""
    v = _params(norm[member])
    multi = size[member_cand] >= 2
    w_c = weight[member_cand] * multi
    bias = np.zeros(n_readers)
    noise = np.full(n_readers, 0.01)
    n_c = len(size)
    n_boxes = np.bincount(member_reader, weights=multi.astype(float), minlength=n_readers)
    for _ in range(passes):
        corr = v - np.concatenate([np.zeros((len(v), 2)),
                                   np.repeat(bias[member_reader][:, None], 2, axis=1)], axis=1)
        prec = 1.0 / noise[member_reader]
        tot = np.bincount(member_cand, weights=prec, minlength=n_c)
        sums = np.stack([np.bincount(member_cand, weights=prec * corr[:, j], minlength=n_c)
                         for j in range(4)], axis=1)
        others = np.where(multi, tot[member_cand] - prec, 1.0)
        loo = np.where(multi[:, None],
                       (sums[member_cand] - prec[:, None] * corr) / others[:, None], corr)
        scale = np.exp(loo[:, 2:])
        d_size = (v[:, 2:] - loo[:, 2:]).mean(axis=1)  # raw log size minus others' corrected
        raw_bias = np.bincount(member_reader, weights=w_c * d_size, minlength=n_readers)
        wsum = np.bincount(member_reader, weights=w_c, minlength=n_readers)
        bias = raw_bias / (wsum + prior_boxes)
        bias -= np.median(bias[wsum > 0]) if (wsum > 0).any() else 0.0
        res = np.concatenate([(corr[:, :2] - loo[:, :2]) / scale,
                              corr[:, 2:] - loo[:, 2:]], axis=1)
        excess = (res ** 2).mean(axis=1) - 1.0 / others
        panel = max(float((w_c * (res ** 2).mean(axis=1)).sum() / max(w_c.sum(), _MIN_SIZE))
                    / 2, 1e-4)
        noise = (np.bincount(member_reader, weights=w_c * excess, minlength=n_readers)
                 + prior_boxes * panel) / (wsum + prior_boxes)
        noise = np.maximum(noise, 1e-4)
    return Localisation(bias=bias, noise=noise, n_boxes=n_boxes.astype(np.int64))


def fused_boxes(
    norm: np.ndarray, member: np.ndarray, member_cand: np.ndarray,
    member_reader: np.ndarray, n_cand: int, loc: Localisation,
) -> np.ndarray:
    """(C, 4) normalised fused box of every candidate (see the module docstring)."""
    v = _params(norm[member])
    v[:, 2:] -= loc.bias[member_reader][:, None]
    prec = 1.0 / loc.noise[member_reader]
    tot = np.bincount(member_cand, weights=prec, minlength=n_cand)
    mean = np.stack([np.bincount(member_cand, weights=prec * v[:, j], minlength=n_cand)
                     for j in range(4)], axis=1) / np.maximum(tot, 1e-12)[:, None]
    half = np.exp(mean[:, 2:]) / 2
    return np.concatenate([mean[:, :2] - half, mean[:, :2] + half], axis=1)
