"""A radiologist's own view: queue, progress, and agreement with the consensus.

Agreement is computed only over images whose consensus is final (every read in,
consensus after the last one, no adjudication pending): showing it earlier would
leak the other readers' work through the consensus.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from typing import Any

from django.db.models import Count, Q
from django.urls import reverse

from annotations.consensus import agreement
from annotations.models import Assignment, Image, Project, Reader, Workspace
from annotations.services.consensus import reads_from_annotations, usable_annotations
from annotations.services.image_state import image_states
from annotations.services.labels import final_results

_OPEN = (Assignment.Status.PENDING, Assignment.Status.IN_PROGRESS)


def my_workspaces(reader: Reader) -> list[dict[str, Any]]:
    """The reader's Label Studio projects (reading, adjudication) and what is left."""
    rows = []
    for ws in Workspace.objects.filter(reader=reader).select_related("project").order_by(
            "project__slug", "kind"):
        counts = ws.project.images.filter(assignments__reader=reader).aggregate(
            total=Count("id"),
            done=Count("id", filter=Q(assignments__reader=reader,
                                      assignments__status__in=["completed", "skipped"])))
        if ws.kind == Workspace.Kind.ADJUDICATION:
            counts = {"total": ws.tasks.count(),
                      "done": ws.tasks.filter(adjudication__status="done").count()}
        rows.append({"project": ws.project.slug, "project_name": ws.project.name,
                     "kind": ws.kind,
                     # the platform signs the reader in; Label Studio has no password for them
                     "url": reverse("my-workspace-open", args=[ws.pk]),
                     "total": counts["total"], "done": counts["done"],
                     "remaining": counts["total"] - counts["done"]})
    return rows


def my_progress(reader: Reader) -> list[dict[str, Any]]:
    """Assigned and finished reads per project."""
    rows = (Assignment.objects.filter(reader=reader).values("image__project__slug",
                                                            "image__project__name")
            .annotate(assigned=Count("id"), done=Count("id", filter=Q(
                status__in=[Assignment.Status.COMPLETED, Assignment.Status.SKIPPED])))
            .order_by("image__project__slug"))
    return [{"project": r["image__project__slug"], "project_name": r["image__project__name"],
             "assigned": r["assigned"], "done": r["done"],
             "fraction": r["done"] / r["assigned"] if r["assigned"] else 0.0} for r in rows]


def my_queue(reader: Reader, limit: int = 50) -> list[dict[str, Any]]:
    rows = (Assignment.objects.filter(reader=reader, status__in=_OPEN)
            .select_related("image__project").order_by("created_at", "id")[:limit])
    return [{"image": a.image.pseudo_id, "project": a.image.project.slug,
             "status": a.status, "assigned_at": a.created_at.isoformat()} for a in rows]


def my_agreement(reader: Reader, project: Project, iou_thr: float = 0.4) -> dict[str, Any]:
    """This reader against the final labels, per class, over final images only."""
    mine = list(Assignment.objects.filter(reader=reader, image__project=project)
                .values_list("image_id", flat=True))
    states = image_states(project, mine)
    final_pks = [pk for pk in mine if states.get(pk) == "final"]
    images = list(Image.objects.filter(pk__in=final_pks))
    final_ids = {i.pseudo_id for i in images}
    out: dict[str, Any] = {"project": project.slug, "project_name": project.name,
                           "final_images": len(final_ids), "assigned": len(mine),
                           "overall": None, "per_class": []}
    if not final_ids:
        return out
    # only this reader's reads of final images, against those images' final labels
    reads = reads_from_annotations(list(
        usable_annotations(project, images).filter(reader=reader)))
    finals = final_results(project, images)
    names = dict(project.label_classes.values_list("class_id", "name"))
    rows = agreement.reader_vs_consensus(reads, finals, iou_thr, final_ids)
    overall = [r for r in rows if r.reader == reader.code]
    if overall:
        out["overall"] = overall[0].to_dict()
    # per class, only the images where the class appears on either side: the others
    # add no boxes to either count (one pass instead of classes x images)
    where: dict[int, set[str]] = defaultdict(set)
    for r in reads:
        for read in r.reads:
            for cid in set(read.classes.tolist()):
                where[cid].add(r.image_id)
    for image_id, result in finals.items():
        for cid in set(result.classes.tolist()):
            where[cid].add(image_id)
    for cid, name in sorted(names.items()):
        if not where.get(cid):
            continue
        per = agreement.reader_vs_consensus(
            [_only_class(r, cid) for r in reads if r.image_id in where[cid]],
            {k: _only_class_result(v, cid) for k, v in finals.items() if k in where[cid]},
            iou_thr, where[cid])
        per = [r for r in per if r.reader == reader.code and
               (r.n_reader_boxes or r.n_consensus_boxes)]
        if per:
            out["per_class"].append({"class_name": name, **per[0].to_dict()})
    return out


def _only_class(image_reads, class_id: int):
    return replace(image_reads, reads=[
        replace(r, boxes=r.boxes[r.classes == class_id], classes=r.classes[r.classes == class_id])
        for r in image_reads.reads])


def _only_class_result(result, class_id: int):
    keep = result.classes == class_id
    return replace(result, boxes=result.boxes[keep], classes=result.classes[keep],
                   scores=result.scores[keep],
                   support=[s for s, k in zip(result.support, keep, strict=True) if k])
