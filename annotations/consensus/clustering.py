"""Cross-reader box clustering shared by ``majority`` and ``reader_weighted``.

Within each (image, class), boxes of *different* readers are linked when their
IoU >= the class threshold.  Links are taken greedily by decreasing IoU (ties
by box order, which is canonical) and two clusters merge only if

* they have no reader in common (a cluster holds at most one box per reader);
* every cross pair is linked (complete linkage: each member overlaps each
  other member, so a chain of shifted boxes cannot snowball into one lesion).

IoU is computed vectorised for all within-group pairs; only the links that
pass the threshold go through the (small) Python merge loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from annotations.consensus.flat import FlatReads
from annotations.consensus.geometry import pairs_within
from annotations.consensus.params import ClassThresholds
from annotations.consensus.segments import starts_from_sorted
from annotations.geometry import paired_iou


@dataclass(frozen=True, eq=False)
class Clusters:
    """``cluster_of[b]``: cluster of box b; clusters numbered by (image, class, first box)."""

    cluster_of: np.ndarray  # (B,)
    image: np.ndarray  # (C,)
    cls: np.ndarray  # (C,)
    size: np.ndarray  # (C,) number of boxes (= number of distinct readers)
    member_start: np.ndarray  # (C+1,) offsets into ``members``
    members: np.ndarray  # box indices grouped by cluster, ascending

    @property
    def n(self) -> int:
        return len(self.image)

    def mean_boxes(self, boxes: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """Per-cluster (weighted) mean of member coordinates."""
        w = np.ones(len(self.members)) if weights is None else weights[self.members]
        sums = np.add.reduceat(boxes[self.members] * w[:, None], self.member_start[:-1], axis=0)
        tot = np.add.reduceat(w, self.member_start[:-1])
        return sums / tot[:, None]


def cluster_boxes(flat: FlatReads, thresholds: ClassThresholds) -> Clusters:
    n = len(flat.box_class)
    # boxes are ordered by image then read; regroup by (image, class), stable
    order = np.lexsort((np.arange(n), flat.box_class, flat.box_image))
    key_img, key_cls = flat.box_image[order], flat.box_class[order]
    gkey = key_img * (int(flat.box_class.max(initial=0)) + 1) + key_cls
    gstart = starts_from_sorted(gkey) if n else np.zeros(1, dtype=np.int64)
    li, lj = pairs_within(gstart)
    i, j = np.minimum(order[li], order[lj]), np.maximum(order[li], order[lj])
    diff_reader = flat.box_reader[i] != flat.box_reader[j]
    i, j = i[diff_reader], j[diff_reader]
    iou = paired_iou(flat.boxes[i], flat.boxes[j])
    ok = iou >= thresholds.lookup(flat.box_class[i])
    i, j, iou = i[ok], j[ok], iou[ok]
    link_order = np.lexsort((j, i, -iou))
    parent = list(range(n))
    members: dict[int, list[int]] = {}
    readers = flat.box_reader.tolist()
    il, jl = i.tolist(), j.tolist()
    linked = set(zip(il, jl, strict=True)) | set(zip(jl, il, strict=True))

    def root(x: int) -> int:
        while parent[x] != x:
            x = parent[x]
        return x

    for a, b in zip(i[link_order].tolist(), j[link_order].tolist(), strict=True):
        ra, rb = root(a), root(b)
        if ra == rb:
            continue
        ma, mb = members.get(ra, [ra]), members.get(rb, [rb])
        if {readers[x] for x in ma} & {readers[x] for x in mb}:
            continue
        if (len(ma) > 1 or len(mb) > 1) and not all(
            (x, y) in linked for x in ma for y in mb
        ):
            continue
        parent[rb] = ra
        members[ra] = ma + mb
        members.pop(rb, None)

    roots = np.array([root(x) for x in range(n)], dtype=np.int64) if n else np.zeros(0, int)
    # number clusters by (image, class, smallest member)
    uniq_roots, cluster_of = np.unique(roots, return_inverse=True)
    first = np.full(len(uniq_roots), n, dtype=np.int64)
    np.minimum.at(first, cluster_of, np.arange(n))
    rank = np.lexsort((first, flat.box_class[first], flat.box_image[first]))
    renum = np.empty_like(rank)
    renum[rank] = np.arange(len(rank))
    cluster_of = renum[cluster_of]
    firsts = first[rank]
    members_sorted = np.lexsort((np.arange(n), cluster_of))
    size = np.bincount(cluster_of, minlength=len(rank))
    return Clusters(
        cluster_of=cluster_of,
        image=flat.box_image[firsts],
        cls=flat.box_class[firsts],
        size=size,
        member_start=np.concatenate(([0], np.cumsum(size))).astype(np.int64),
        members=members_sorted,
    )


def reader_pairs(flat: FlatReads, clusters: Clusters) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One row per (cluster, reader of the cluster's image): (cluster, reader, drew).

    ``drew`` says whether that reader has a box in the cluster: the observation
    that reader-reliability models explain.
    """
    n_readers = len(flat.readers)
    k = flat.reads_per_image()[clusters.image]
    cand = np.repeat(np.arange(clusters.n), k)
    first_read = flat.image_read_start[clusters.image]
    read_rows = np.repeat(first_read, k) + (np.arange(len(cand)) - np.repeat(np.cumsum(k) - k, k))
    pair_reader = flat.read_reader[read_rows]
    drew = np.isin(cand * n_readers + pair_reader,
                   clusters.cluster_of * n_readers + flat.box_reader)
    return cand, pair_reader, drew
