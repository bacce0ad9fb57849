"""Turn flat per-box strategy output back into ``dict[image_id, ConsensusResult]``.

Strategies compute on flat arrays; this is the single place that builds the
per-image objects, derives ``support`` from box membership and applies the
shared "No finding" rule, so all strategies agree on those conventions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from annotations.consensus.flat import FlatReads
from annotations.consensus.image_labels import consensus_image_labels
from annotations.consensus.types import ConsensusResult
from annotations.taxonomy import NO_FINDING


def assemble(
    flat: FlatReads,
    out_image: np.ndarray,
    boxes: np.ndarray,
    classes: np.ndarray,
    scores: np.ndarray,
    member_of: np.ndarray,
    image_meta: Callable[[int], dict[str, Any]] | None = None,
) -> dict[str, ConsensusResult]:
    """Build results; output rows must be grouped by image (ascending index).

    ``member_of[b]`` is the output row that input box ``b`` supports (-1: none).
    """
    n_out = len(out_image)
    pairs = np.unique(
        np.stack([member_of, flat.box_reader], axis=1)[member_of >= 0], axis=0
    )
    p_start = np.searchsorted(pairs[:, 0], np.arange(n_out + 1))
    readers = flat.readers
    reader_col = pairs[:, 1].tolist()
    starts = p_start.tolist()
    support = [
        tuple(readers[j] for j in reader_col[starts[o] : starts[o + 1]]) for o in range(n_out)
    ]
    img_start = np.searchsorted(out_image, np.arange(flat.n_images + 1)).tolist()
    n_reads = flat.reads_per_image().tolist()
    read_start = flat.image_read_start.tolist()
    nf_votes = [NO_FINDING in labels for labels in flat.read_labels]
    boxes = np.ascontiguousarray(boxes, dtype=np.float64)
    classes = np.asarray(classes, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)

    results: dict[str, ConsensusResult] = {}
    for i, image_id in enumerate(flat.image_ids):
        lo, hi = img_start[i], img_start[i + 1]
        meta: dict[str, Any] = {
            "n_readers": n_reads[i],
            "no_finding_votes": sum(nf_votes[read_start[i] : read_start[i + 1]]),
        }
        if image_meta is not None:
            meta.update(image_meta(i))
        results[image_id] = ConsensusResult(
            boxes=boxes[lo:hi],
            classes=classes[lo:hi],
            scores=scores[lo:hi],
            support=support[lo:hi],
            image_labels=consensus_image_labels(hi - lo, n_reads[i]),
            meta=meta,
        )
    return results
