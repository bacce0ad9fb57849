"""Final labels: what training and exports use.

Per image, the adjudicator's decision when there is one (it overrides the
consensus and is kept as such), else the image's consensus from the most recent
finished run that covered it.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from annotations.consensus import ConsensusResult
from annotations.models import ConsensusImage, ConsensusRun, Image, Project
from annotations.services.adjudication import adjudicated_images
from annotations.services.consensus import reads_from_annotations


def _from_consensus_row(row: ConsensusImage) -> ConsensusResult:
    boxes = list(row.boxes.all())
    return ConsensusResult(
        boxes=np.array([[b.x_min, b.y_min, b.x_max, b.y_max] for b in boxes],
                       dtype=np.float64).reshape(-1, 4),
        classes=np.array([b.label_class.class_id for b in boxes], dtype=np.int64),
        scores=np.array([b.score for b in boxes], dtype=np.float64),
        support=[tuple(b.support) for b in boxes],
        image_labels=frozenset(row.image_labels),
        meta={"source": "consensus", "run": row.run_id},
    )


def final_results(project: Project, images: Iterable[Image] | None = None
                  ) -> dict[str, ConsensusResult]:
    """image pseudo id -> final label, for every image that has one (or for the
    given images only: one image's viewer must not read the whole project)."""
    rows = (ConsensusImage.objects
            .filter(run__project=project, run__status=ConsensusRun.Status.DONE)
            .select_related("image").prefetch_related("boxes__label_class")
            .order_by("image_id", "-run_id"))
    if images is not None:
        images = list(images)
        rows = rows.filter(image__in=images)
    out: dict[str, ConsensusResult] = {}
    for row in rows:
        out.setdefault(row.image.pseudo_id, _from_consensus_row(row))
    decisions = adjudicated_images(project, None if images is None else [i.pk for i in images])
    if decisions:
        for reads in reads_from_annotations(list(decisions.values())):
            read = reads.reads[0]
            out[reads.image_id] = ConsensusResult(
                boxes=read.boxes, classes=read.classes,
                scores=np.ones(len(read.classes)),
                support=[(read.reader,)] * len(read.classes),
                image_labels=read.image_labels,
                meta={"source": "adjudication", "adjudicator": read.reader},
            )
    return out
