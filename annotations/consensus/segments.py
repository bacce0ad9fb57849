"""Segment (ragged group) operations that reproduce numpy's 1-D results exactly.

The reference WBF sorts each group with ``np.argsort`` (default kind: on SIMD
builds an *unstable* sort, so ties come out in a hardware-specific order) and
sums weights with ``np.sum`` (pairwise summation for 8+ terms).  To give
bit-identical results without a Python call per group, groups of equal length
are stacked into a 2-D array and the very same numpy routine runs along the
last axis, which applies the 1-D kernel to each row.
"""

from __future__ import annotations

import numpy as np


def starts_from_sorted(keys: np.ndarray) -> np.ndarray:
    """Start offsets (with a final end offset) of runs of equal ``keys``."""
    n = len(keys)
    if n == 0:
        return np.zeros(1, dtype=np.int64)
    cut = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    return np.concatenate(([0], cut, [n])).astype(np.int64)


def _by_length(starts: np.ndarray):
    lengths = np.diff(starts)
    for n in np.unique(lengths):
        if n == 0:
            continue
        sel = np.flatnonzero(lengths == n)
        yield int(n), sel, starts[sel][:, None] + np.arange(n)


def segment_argsort_desc(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Global row order that sorts each segment like ``np.argsort(v)[::-1]``."""
    out = np.empty(len(values), dtype=np.int64)
    for _, _sel, idx in _by_length(starts):
        order = np.argsort(values[idx], axis=1)[:, ::-1]
        out[idx] = np.take_along_axis(idx, order, axis=1)
    return out


def segment_sum(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Per-segment ``np.sum`` of contiguous segments (empty segments give 0.0)."""
    out = np.zeros(len(starts) - 1, dtype=np.float64)
    for _, sel, idx in _by_length(starts):
        out[sel] = values[idx].sum(axis=1)
    return out
