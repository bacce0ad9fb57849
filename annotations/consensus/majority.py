"""``majority``: keep lesions that a quorum of the image's readers drew.

Boxes are clustered across readers (``clustering``: one box per reader per
cluster, complete linkage at IoU >= the class threshold).  With ``k`` readers
of the image, a cluster survives when at least ``ceil(quorum * k)`` readers
support it (and at least ``min_support``).  The consensus box is the mean of
the member boxes; its score is the support fraction ``support / k``.

Params: ``quorum`` (0 < q <= 1, default 0.5), ``min_support`` (default 1),
``iou_thr`` (number or ``{class_id: thr}``, default 0.4), ``default_iou_thr``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from annotations.consensus.assemble import assemble
from annotations.consensus.clustering import Clusters, cluster_boxes
from annotations.consensus.flat import FlatReads
from annotations.consensus.params import ParamReader
from annotations.consensus.registry import Strategy, register
from annotations.consensus.types import ConsensusResult, ImageReads


def quorum_count(quorum: float, n_readers: np.ndarray) -> np.ndarray:
    """``ceil(q * k)`` robust to float noise (q=2/3, k=3 gives 2, not 3)."""
    return np.ceil(np.asarray(n_readers) * quorum - 1e-9).astype(np.int64)


def emit_clusters(
    flat: FlatReads,
    clusters: Clusters,
    keep: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray,
    image_meta: Any = None,
) -> dict[str, ConsensusResult]:
    """Assemble kept clusters, ordered per image by (-score, class, coordinates)."""
    kept = np.flatnonzero(keep)
    order = kept[
        np.lexsort(
            (
                boxes[kept, 3], boxes[kept, 2], boxes[kept, 1], boxes[kept, 0],
                clusters.cls[kept], -scores[kept], clusters.image[kept],
            )
        )
    ]
    row_of_cluster = np.full(clusters.n, -1, dtype=np.int64)
    row_of_cluster[order] = np.arange(len(order))
    member_of = row_of_cluster[clusters.cluster_of] if clusters.n else clusters.cluster_of
    return assemble(
        flat, clusters.image[order], boxes[order], clusters.cls[order], scores[order],
        member_of, image_meta,
    )


@register("majority")
class Majority(Strategy):
    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        super().__init__(params)
        p = ParamReader("majority", params)
        self.quorum = p.number("quorum", 0.5, lo=1e-9, hi=1.0)
        self.min_support = int(p.number("min_support", 1, lo=1, hi=1000))
        self.iou_thr = p.class_thresholds()
        p.done()

    def run_boxes(self, images: Sequence[ImageReads]) -> dict[str, ConsensusResult]:
        flat = FlatReads.build(images)
        clusters = cluster_boxes(flat, self.iou_thr)
        k = flat.reads_per_image()[clusters.image]
        need = np.maximum(quorum_count(self.quorum, k), self.min_support)
        keep = clusters.size >= need
        scores = clusters.size / np.maximum(k, 1)
        boxes = clusters.mean_boxes(flat.boxes) if clusters.n else np.zeros((0, 4))
        k_img = flat.reads_per_image()
        need_img = np.maximum(quorum_count(self.quorum, k_img), self.min_support).tolist()
        return emit_clusters(
            flat, clusters, keep, boxes, scores,
            lambda i: {"strategy": "majority", "quorum_readers": need_img[i]},
        )
