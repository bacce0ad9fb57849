"""A radiologist's own view: queue, progress, agreement and estimated reliability.

Agreement and reliability are computed only over images whose consensus is
final (every read in, consensus after the last one, no adjudication pending):
showing them earlier would leak the other readers' work through the consensus.
Reliability (``my_reliability``) is the reader model's estimate of this
reader's sensitivity and false positives per class, fitted on every reader's
reads of *this reader's* final images only: the model's shared parameters
(lesion rates, the panel's averages, other readers' rates) would otherwise move
when an image the reader was never assigned turns final.  Only the asking
reader's own row ever leaves this module.
"""

from __future__ import annotations

import hashlib
from typing import Any

from django.core.cache import cache
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
    # the reader's images as a subquery throughout: no 18,000-item IN lists at 100,000
    mine = (Assignment.objects.filter(reader=reader, image__project=project)
            .values("image_id"))
    states = image_states(project, mine)
    final_ids = {pseudo for pk, pseudo in Image.objects.filter(pk__in=mine).values_list(
        "pk", "pseudo_id") if states.get(pk) == "final"}
    out: dict[str, Any] = {"project": project.slug, "project_name": project.name,
                           "final_images": len(final_ids), "assigned": len(states),
                           "overall": None, "per_class": []}
    if not final_ids:
        return out
    # only this reader's reads of final images, against those images' final labels
    # (read for all of the reader's reads, kept for their final images only)
    reads = [r for r in reads_from_annotations(usable_annotations(project).filter(
        reader=reader)) if r.image_id in final_ids]
    finals = {k: v for k, v in final_results(project, mine).items() if k in final_ids}
    names = dict(project.label_classes.values_list("class_id", "name"))
    # overall and per class from one vectorised matching, not one per class
    rows, per_class = agreement.reader_vs_consensus_by_class(reads, finals, iou_thr,
                                                             final_ids)
    overall = [r for r in rows if r.reader == reader.code]
    if overall:
        out["overall"] = overall[0].to_dict()
    for cid, name in sorted(names.items()):
        mine_row = [r for r in per_class.get(cid, ()) if r.reader == reader.code]
        if mine_row:
            out["per_class"].append({"class_name": name, **mine_row[0].to_dict()})
    return out


#: How long a fitted reliability stays cached (the key changes with any read).
RELIABILITY_CACHE_S = 24 * 3600
#: Part of the cache key: bump when the reader model or this summary changes.
RELIABILITY_CACHE_VERSION = 2


def _own_estimates(project: Project, reader: Reader,
                   images: list[Image]) -> dict[str, Any] | None:
    """``reader``'s row of the reader model fitted on every read of ``images``, cached
    per exact set of annotation versions (a new or changed read, or another of the
    reader's images turning final, is a new key, never a stale hit)."""
    from annotations.consensus import build

    usable = usable_annotations(project, images)
    versions = sorted(usable.values_list("pk", "version"))
    digest = hashlib.sha256(repr(versions).encode()).hexdigest()
    key = f"my-reliability:{RELIABILITY_CACHE_VERSION}:{project.pk}:{reader.pk}:{digest}"
    hit = cache.get(key)
    if hit is not None:
        return hit or None
    model = build("reader_model", {})
    model.run(reads_from_annotations(list(usable)))
    row = model.reader_estimates.get(reader.code)
    if row is not None:  # and the image-level findings' sensitivity and specificity
        row = {**row, "image_labels": model.image_readers.get(reader.code, {})}
    cache.set(key, row or {}, RELIABILITY_CACHE_S)
    return row


def my_reliability(reader: Reader, project: Project) -> dict[str, Any]:
    """This reader's estimated sensitivity and false positives per image, pooled and per
    class, with 95% intervals, from the reader model over the project's final images.

    Only ``reader``'s own row is returned; nothing about another reader is.
    """
    out: dict[str, Any] = {"project": project.slug, "project_name": project.name,
                           "final_images": 0, "overall": None, "per_class": [],
                           "image_labels": []}
    assigned = (Assignment.objects.filter(reader=reader, image__project=project)
                .values("image_id"))  # a subquery, as in my_agreement
    states = image_states(project, assigned)
    images = list(Image.objects.filter(pk__in=[pk for pk, s in states.items()
                                               if s == "final"]))
    out["final_images"] = len(images)
    if not images:
        return out
    row = _own_estimates(project, reader, images)
    if row is None:
        return out
    names = dict(project.label_classes.values_list("class_id", "name"))
    keys = ("sensitivity", "sensitivity_ci", "fp_per_image", "fp_per_image_ci")
    out["overall"] = {k: row[k] for k in (*keys, "n_images", "n_boxes")}
    out["per_class"] = [{"class_name": names.get(int(cid), str(cid)), "lesions": v["lesions"],
                         **{k: v[k] for k in keys}}
                        for cid, v in sorted(row["per_class"].items(), key=lambda kv: int(kv[0]))
                        if int(cid) in names and v["lesions"] >= 1]
    label_keys = ("sensitivity", "sensitivity_ci", "specificity", "specificity_ci",
                  "n_images")
    out["image_labels"] = [{"label": label, **{k: v[k] for k in label_keys}}
                           for label, v in sorted(row.get("image_labels", {}).items())]
    return out
