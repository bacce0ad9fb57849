"""Adjudication: images whose readers disagree go to an adjudicator, whose read
then overrides the consensus for that image and is kept as such.

Routing happens after every consensus run: an image with agreement below the
project's ``adjudication_threshold`` gets one open ``Adjudication`` (never two).
With a weekly budget and a strategy that gives posteriors (``reader_model``),
the images most likely to be wrong are routed instead, at most the budget per
7 days (``annotations.consensus.routing``).
The adjudicator sees every reader's boxes and the consensus; an adjudicator who
read the image themselves cannot decide it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from annotations.consensus.routing import by_uncertainty
from annotations.errors import DomainError
from annotations.models import (
    Adjudication,
    Assignment,
    ConsensusImage,
    ConsensusRun,
    Project,
    Reader,
    ReaderAnnotation,
)
from annotations.services import locks
from annotations.services.annotating import BoxIn, MaskIn, reader_annotation_record
from annotations.services.audit import audit_record


def adjudications_route(*, run: ConsensusRun) -> list[Adjudication]:
    """Open cases for this run's images: by posterior within the weekly budget when the
    project sets one and the strategy gives posteriors, else below the agreement
    threshold."""
    project = run.project
    # of this run's images only: the project's whole history would make every small run
    # (one per completed image) cost more as the project grows
    open_or_done = set(Adjudication.objects.filter(
        project=project, image_id__in=run.images.values("image_id")).exclude(
        status=Adjudication.Status.CANCELLED).values_list("image_id", flat=True))
    if project.adjudication_budget_per_week is not None:
        scored = list(ConsensusImage.objects.filter(run=run, meta__has_key="p_error")
                      .select_related("image"))
        if scored:
            return _route_by_uncertainty(run, scored, open_or_done)
    threshold = project.adjudication_threshold
    if threshold is None:
        return []
    low = ConsensusImage.objects.filter(run=run, agreement__lt=threshold).select_related("image")
    created = [
        Adjudication.objects.create(project=project, image=row.image, consensus_run=run,
                                    agreement=row.agreement)
        for row in low if row.image_id not in open_or_done
    ]
    if created:
        audit_record(action="adjudication.route", project=project, target=run,
                     detail={"images": len(created), "threshold": threshold})
    return created


def _route_by_uncertainty(run: ConsensusRun, scored: list[ConsensusImage],
                          open_or_done: set[int]) -> list[Adjudication]:
    project = run.project
    budget = project.adjudication_budget_per_week
    # two runs finishing at once must not both see the week's budget unspent
    with locks.exclusive(f"adjudication-budget:{project.pk}"):
        return _route_within_budget(run, scored, open_or_done, budget)


def _route_within_budget(run: ConsensusRun, scored: list[ConsensusImage],
                         open_or_done: set[int], budget: int) -> list[Adjudication]:
    project = run.project
    week_ago = timezone.now() - timedelta(days=7)
    used = Adjudication.objects.filter(project=project, created_at__gte=week_ago).exclude(
        status=Adjudication.Status.CANCELLED).count()
    results = {row.image.pseudo_id: row for row in scored if row.image_id not in open_or_done}
    chosen = by_uncertainty({pid: row.meta for pid, row in results.items()},
                            max(budget - used, 0))
    created = [
        Adjudication.objects.create(project=project, image=results[pid].image,
                                    consensus_run=run, agreement=results[pid].agreement,
                                    p_error=float(results[pid].meta["p_error"]))
        for pid in chosen
    ]
    if created:
        audit_record(action="adjudication.route", project=project, target=run,
                     detail={"images": len(created), "budget_per_week": budget,
                             "used_this_week": used, "by": "p_error"})
    return created


@transaction.atomic
def project_adjudicator_add(*, project: Project, reader: Reader, actor: Any = None) -> Reader:
    """Let ``reader`` adjudicate ``project`` (they become an adjudicator if not yet).

    Cases are scoped per project: an adjudicator sees and decides the cases of the projects
    they were added to, and never one of an image they read.
    """
    if not reader.active:
        raise DomainError("invalid_reader", f"reader {reader.code} is not active")
    if not reader.is_adjudicator:
        Reader.objects.filter(pk=reader.pk).update(is_adjudicator=True)
        reader.is_adjudicator = True
    reader.adjudicates.add(project)
    audit_record(action="adjudication.adjudicator_add", actor=actor, project=project,
                 target=reader, detail={"code": reader.code})
    return reader


@transaction.atomic
def adjudication_decide(
    *, adjudication: Adjudication, adjudicator: Reader, boxes: Sequence[BoxIn],
    image_labels: Sequence[str] = (), masks: Sequence[MaskIn] = (), actor: Any = None,
) -> Adjudication:
    adj = Adjudication.objects.select_for_update().get(pk=adjudication.pk)
    if adj.status != Adjudication.Status.PENDING:
        raise DomainError("conflict", "this adjudication is already decided")
    if not adjudicator.is_adjudicator or not adjudicator.adjudicates.filter(
            pk=adj.project_id).exists():
        raise DomainError("forbidden", "only this project's adjudicators can decide")
    if Assignment.objects.filter(image=adj.image, reader=adjudicator).exists():
        raise DomainError("forbidden", "an adjudicator cannot decide an image they read")
    decision, _ = reader_annotation_record(
        image=adj.image, reader=adjudicator, boxes=boxes, image_labels=image_labels,
        masks=masks, source=ReaderAnnotation.Source.ADJUDICATION, actor=actor,
        complete_assignment=False, trigger_consensus=False,
    )
    adj.status, adj.adjudicator, adj.decision = Adjudication.Status.DONE, adjudicator, decision
    adj.decided_at = timezone.now()
    adj.save(update_fields=["status", "adjudicator", "decision", "decided_at"])
    audit_record(action="adjudication.decide", actor=actor, project=adj.project, target=adj)
    return adj


def adjudicated_images(project: Project, image_ids: Sequence[int] | QuerySet | None = None
                       ) -> dict[int, ReaderAnnotation]:
    """image id -> the adjudicator's decision, for every decided image (of ``image_ids``
    only, when given: a page or an export chunk does not read the whole project's)."""
    rows = Adjudication.objects.filter(project=project, status=Adjudication.Status.DONE)
    if image_ids is not None:
        rows = rows.filter(image_id__in=image_ids)
    return {a.image_id: a.decision for a in rows.select_related("decision")
            if a.decision is not None}
