"""The image state machine: where every image of a project stands on its way from
import to final label, named the same way on every page and in every decision.

An image moves through states that every page names the same way:

* ``unassigned``: imported, no reader yet;
* ``reading``: some of its assigned readers have not finished;
* ``read``: every assigned reader finished, no consensus covers all of them yet;
* ``adjudication``: consensus found readers too far apart, an adjudicator decides;
* ``final``: every read is in, and a consensus (or an adjudicator's decision) made after
  the last of them stands.  Only then may a radiologist see other readers' boxes or
  the consensus of that image (blinding).

Transitions follow from the stored facts, never from a stored state (there is none
to drift): assignments move an image from unassigned to reading, the last finished
read to read, a consensus run that merged every current read to final (or, when
readers disagree past the project's threshold, to adjudication until decided).
Blinding, retraining and the reader's own progress all ask this module.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from django.db.models import Count, Max

from annotations.models import (
    Adjudication,
    Assignment,
    ConsensusImage,
    ConsensusRun,
    Image,
    Project,
)
from annotations.selectors import is_admin
from annotations.services.consensus import usable_annotations

STATES = ("unassigned", "reading", "read", "adjudication", "final")
DONE = (Assignment.Status.COMPLETED, Assignment.Status.SKIPPED)


def image_states(project: Project, image_ids: list[int] | None = None) -> dict[int, str]:
    """Image pk -> state (see the module docstring), in a handful of queries.

    "Consensus after the last read" is decided exactly, not by clock: the latest
    finished run that covered the image must have recorded every current usable
    read of it (a run records the annotation versions it merged).
    """
    images = Image.objects.filter(project=project)
    if image_ids is None:  # the whole project: filter by project, no id list
        on_image: dict[str, Any] = {"image__project": project}
    else:
        images = images.filter(pk__in=image_ids)
        on_image = {"image_id__in": list(image_ids)}
    ids = list(images.values_list("pk", flat=True))
    assigned = dict(Assignment.objects.filter(**on_image).values_list("image_id")
                    .annotate(n=Count("id")).values_list("image_id", "n"))
    done = dict(Assignment.objects.filter(**on_image, status__in=DONE)
                .values_list("image_id").annotate(n=Count("id")).values_list("image_id", "n"))
    reads: dict[int, set[int]] = defaultdict(set)
    for image_id, pk in usable_annotations(project).filter(**on_image).values_list(
            "image_id", "pk"):
        reads[image_id].add(pk)
    latest = dict(ConsensusImage.objects.filter(
        **on_image, run__status=ConsensusRun.Status.DONE)
        .values_list("image_id").annotate(r=Max("run_id")).values_list("image_id", "r"))
    through = ConsensusRun.annotations.through
    covered = set(through.objects.filter(
        consensusrun_id__in=set(latest.values()),
        **{f"readerannotation__{k}": v for k, v in on_image.items()})
        .values_list("consensusrun_id", "readerannotation_id"))
    adjudication = dict(Adjudication.objects.filter(**on_image).exclude(
        status=Adjudication.Status.CANCELLED).order_by("image_id", "id")
        .values_list("image_id", "status"))  # the latest per image wins
    out = {}
    for pk in ids:
        n = assigned.get(pk, 0)
        if n == 0:
            out[pk] = "unassigned"
        elif done.get(pk, 0) < n:
            out[pk] = "reading"
        elif adjudication.get(pk) == Adjudication.Status.PENDING:
            out[pk] = "adjudication"
        elif adjudication.get(pk) == Adjudication.Status.DONE:
            out[pk] = "final"
        elif pk in latest and all((latest[pk], a) in covered for a in reads.get(pk, ())):
            out[pk] = "final"
        else:
            out[pk] = "read"
    return out


def consensus_is_final(image: Image) -> bool:
    return image_states(image.project, [image.pk]).get(image.pk) == "final"


def model_output_visible(user: Any, image: Image) -> bool:
    """Whether ``user`` may see what a model says about ``image`` (its boxes, its
    findings, where it looked): admins always; readers once the image is final, or
    where the project shows pre-labels to its readers (blinding)."""
    return is_admin(user) or image.project.show_prelabels or consensus_is_final(image)
