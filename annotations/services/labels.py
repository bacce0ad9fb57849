"""Final labels: what training and exports use.

Per image, the adjudicator's decision when there is one (it overrides the
consensus and is kept as such), else the image's consensus from the most recent
finished run that covered it.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from django.db.models import QuerySet

from annotations.consensus import ConsensusResult
from annotations.models import ConsensusImage, ConsensusRun, Image, Project
from annotations.services.adjudication import adjudicated_images
from annotations.services.consensus import (
    json_text,
    parse_once,
    reads_from_annotations,
    stored_results,
)


def final_results(project: Project, images: Iterable[Image | int] | QuerySet | None = None
                  ) -> dict[str, ConsensusResult]:
    """image pseudo id -> final label, for every image that has one (or for the
    given images, instances or pks, only: one image's viewer must not read the whole
    project).

    Read as tuples, not model instances (see ``reads_from_annotations``): the latest
    finished run's row per image, then that row's boxes in one query.
    """
    rows = (ConsensusImage.objects
            .filter(run__project=project, run__status=ConsensusRun.Status.DONE)
            .order_by("image_id", "-run_id"))
    ids = (images if images is None or isinstance(images, QuerySet)  # a subquery
           else [getattr(i, "pk", i) for i in images])
    if ids is not None:
        rows = rows.filter(image_id__in=ids)
    latest: dict[int, tuple] = {}
    labels_of = parse_once(frozenset)
    for pk, image_id, pseudo_id, run_id, labels in rows.values_list(
            "pk", "image_id", "image__pseudo_id", "run_id", json_text("image_labels")):
        if image_id not in latest:
            latest[image_id] = (pk, pseudo_id, labels_of(labels),
                                {"source": "consensus", "run": run_id})
    out = stored_results(list(latest.values()))
    decisions = adjudicated_images(project, ids)
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
