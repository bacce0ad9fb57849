"""Read-only views of a project for its dashboard and image browser.

Image states are ``annotations.services.image_state``'s.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from django.db.models import Count, Max, Q
from django.db.models.fields.json import KT

from annotations.models import (
    Assignment,
    ConsensusImage,
    ConsensusRun,
    Image,
    IngestItem,
    ModelVersion,
    Prediction,
    Project,
    ProtocolViolation,
    ReaderAnnotation,
)
from annotations.services.consensus import latest_run, usable_annotations
from annotations.services.image_state import DONE as _DONE
from annotations.services.image_state import STATES, image_states, state_counts
from annotations.services.ingest import batch_counts
from annotations.services.signing import signed_image_path


def _reader_progress(project: Project) -> list[dict[str, Any]]:
    rows = (Assignment.objects.filter(image__project=project).values("reader__code")
            .annotate(assigned=Count("id"), completed=Count("id", filter=Q(status__in=_DONE)))
            .order_by("reader__code"))
    return [{"reader": r["reader__code"], "assigned": r["assigned"], "completed": r["completed"],
             "fraction": r["completed"] / r["assigned"] if r["assigned"] else 0.0} for r in rows]


def _violations(project: Project, limit: int = 10) -> list[dict[str, Any]]:
    rows = (ProtocolViolation.objects.filter(image__project=project)
            .select_related("workspace__reader", "actual_reader", "image")
            .order_by("-detected_at")[:limit])
    return [{"image": v.image.pseudo_id, "workspace_reader": v.workspace.reader.code,
             "actual_reader": v.actual_reader.code if v.actual_reader else None,
             "detected_at": v.detected_at.isoformat(),
             "reason": v.detail.get("reason", "") if isinstance(v.detail, dict) else ""}
            for v in rows]


def project_overview(project: Project) -> dict[str, Any]:
    """Everything the project dashboard shows, except agreement (its own report)."""
    by_state = state_counts(project)
    imported = sum(by_state.values())
    items = IngestItem.objects.filter(batch__project=project)
    quarantine = list(items.filter(status=IngestItem.Status.QUARANTINED).values("reason")
                      .annotate(count=Count("id")).order_by("-count", "reason"))
    latest = project.consensus_runs.order_by("-id").first()
    done = latest_run(project)
    batch = project.ingest_batches.order_by("-id").first()
    promoted = ModelVersion.objects.filter(project=project, promoted=True, kind="detector").first()
    return {
        "project": project.slug,
        "counts": {
            "imported": imported,
            "quarantined": sum(q["count"] for q in quarantine),
            "duplicates": items.filter(status=IngestItem.Status.DUPLICATE).count(),
            "assigned": imported - by_state["unassigned"],
            "read": by_state["read"] + by_state["adjudication"] + by_state["final"],
            "consensus_done": by_state["final"],
            "waiting_adjudication": by_state["adjudication"],
            "gold": Image.objects.filter(project=project, is_gold=True).count(),
        },
        "states": {s: by_state[s] for s in STATES},
        "quarantine": quarantine,
        "readers": _reader_progress(project),
        "consensus": {
            "strategy": project.consensus_strategy,
            "params": project.consensus_params,
            "latest_run": None if latest is None else {
                "id": latest.pk, "strategy": latest.strategy, "status": latest.status,
                "reason": latest.reason, "trigger": latest.trigger,
                "created_at": latest.created_at.isoformat(), "stats": latest.stats},
            "latest_done_run": done.pk if done else None,
        },
        "violations": _violations(project),
        "latest_batch": None if batch is None else {
            "id": batch.pk, "source": batch.source, "status": batch.status,
            "created_at": batch.created_at.isoformat(), "counts": batch_counts(batch)},
        "model": None if promoted is None else {
            "name": promoted.name, "map_40": promoted.metrics.get("map_40")},
    }


def _latest_uncertainty(project: Project, image_ids: list[int] | None = None
                        ) -> dict[int, float | None]:
    """Image pk -> max-entropy score of the promoted version (else the newest one);
    the one number is read in the database, not each prediction's JSON."""
    detectors = ModelVersion.objects.filter(project=project, kind="detector")
    version = detectors.filter(promoted=True).first() or detectors.first()
    if version is None:
        return {}
    rows = Prediction.objects.filter(image__project=project, model_version=version.name)
    if image_ids is not None:
        rows = rows.filter(image_id__in=image_ids)
    return {pk: float(v) if v not in (None, "") else None
            for pk, v in rows.values_list("image_id", KT("uncertainty__entropy_max"))}


def _agreement(project: Project, image_ids: list[int] | None = None) -> dict[int, float | None]:
    """Image pk -> agreement of the latest finished consensus run that covered it."""
    scope = {} if image_ids is None else {"image_id__in": image_ids}
    latest = (ConsensusImage.objects.filter(run__project=project,
                                            run__status=ConsensusRun.Status.DONE, **scope)
              .values("image_id").annotate(r=Max("run_id")).values("r"))
    return dict(ConsensusImage.objects.filter(run_id__in=latest, image__project=project, **scope)
                .order_by("image_id", "run_id").values_list("image_id", "agreement"))


def _predicted_probability(project: Project, finding: str) -> dict[int, float]:
    """Image pk -> the promoted classifier's probability of ``finding``, as stored with
    the pre-labels of the detector version the grid shows (``Prediction.image_scores``)."""
    detectors = ModelVersion.objects.filter(project=project, kind="detector")
    version = detectors.filter(promoted=True).first() or detectors.first()
    if version is None:
        return {}
    rows = (Prediction.objects.filter(image__project=project, model_version=version.name)
            .exclude(image_scores={}).values_list("image_id", "image_scores"))
    out = {}
    for pk, scores in rows:
        p = (scores.get("probs") or {}).get(finding)
        if isinstance(p, int | float):
            out[pk] = float(p)
    return out


def _reads(project: Project, image_ids: list[int] | None = None):
    reads = usable_annotations(project).exclude(source=ReaderAnnotation.Source.ADJUDICATION)
    return reads if image_ids is None else reads.filter(image_id__in=image_ids)


def _classes_by_image(project: Project, image_ids: list[int]) -> dict[int, set[str]]:
    """Classes the current readers drew or said on each of these images."""
    out: dict[int, set[str]] = defaultdict(set)
    reads = _reads(project, image_ids)
    for image_id, name in reads.values_list("image_id", "boxes__label_class__name"):
        if name:
            out[image_id].add(name)
    for image_id, labels in reads.values_list("image_id", "image_labels"):
        out[image_id].update(labels or [])
    return out


def _images_with_label(project: Project, label: str) -> set[int]:
    """Images on which some current reader drew a ``label`` box or gave the image
    that label (image-level classes such as No finding)."""
    reads = _reads(project)
    out = set(reads.filter(boxes__label_class__name=label).values_list("image_id", flat=True))
    if project.label_classes.filter(name=label, image_level=True).exists():
        out.update(pk for pk, labels in reads.exclude(image_labels=[]).values_list(
            "image_id", "image_labels") if label in (labels or []))
    return out


def image_browse(project: Project, *, label: str | None = None, state: str | None = None,
                 agreement_max: float | None = None, agreement_min: float | None = None,
                 uncertainty_min: float | None = None, gold: bool | None = None,
                 finding: str | None = None, finding_min: float = 0.5,
                 order: str = "pseudo_id", offset: int = 0, limit: int = 60) -> dict[str, Any]:
    """The image browser's grid: one row per image with its state, agreement and
    uncertainty, filtered; ``total`` counts the filtered set before paging.  Classes
    and signed thumbnail URLs are looked up for the returned page only.  ``finding``:
    only images whose predicted probability of that image-level finding (the promoted
    classifier's, stored with the pre-labels) is at least ``finding_min``; the rows
    then carry it as ``finding_p``."""
    images = Image.objects.filter(project=project).order_by("pseudo_id").values_list(
        "pk", "pseudo_id", "width", "height", "is_gold", "view_position")
    # Whole-project maps only where a filter or the order needs them; the rest is looked
    # up for the page alone (at 100,000 images the states alone are most of the cost).
    states = image_states(project) if state else None
    agreement = (_agreement(project) if agreement_max is not None or agreement_min is not None
                 or order == "agreement" else None)
    scores = (_latest_uncertainty(project) if uncertainty_min is not None
              or order in ("uncertainty", "-uncertainty") else None)
    wanted = _images_with_label(project, label) if label else None
    predicted = _predicted_probability(project, finding) if finding else None
    rows = []
    for pk, pseudo_id, width, height, is_gold, view in images:
        if wanted is not None and pk not in wanted:
            continue
        if predicted is not None and predicted.get(pk, -1.0) < finding_min:
            continue
        if states is not None and states.get(pk, "unassigned") != state:
            continue
        if gold is not None and is_gold != gold:
            continue
        if agreement is not None:
            agr = agreement.get(pk)
            if agreement_max is not None and (agr is None or agr > agreement_max):
                continue
            if agreement_min is not None and (agr is None or agr < agreement_min):
                continue
        if scores is not None:
            unc = scores.get(pk)
            if uncertainty_min is not None and (unc is None or unc < uncertainty_min):
                continue
        rows.append({"pk": pk, "id": pseudo_id, "gold": is_gold, "width": width,
                     "height": height, "view_position": view,
                     **({"finding_p": predicted[pk]} if predicted is not None else {})})
    if order in ("uncertainty", "-uncertainty"):
        rows.sort(key=lambda r: (scores.get(r["pk"]) is None, -(scores.get(r["pk"]) or 0.0)))
    elif order == "agreement":
        rows.sort(key=lambda r: (agreement.get(r["pk"]) is None, agreement.get(r["pk"]) or 0.0))
    page = rows[offset:offset + limit]
    pks = [r["pk"] for r in page]
    states = states if states is not None else image_states(project, pks)
    agreement = agreement if agreement is not None else _agreement(project, pks)
    scores = scores if scores is not None else _latest_uncertainty(project, pks)
    classes = _classes_by_image(project, pks)
    out = []
    for row in page:  # only what is shown
        pk, image_id = row.pop("pk"), row.pop("id")
        out.append({"id": image_id, "state": states.get(pk, "unassigned"),
                    "agreement": agreement.get(pk), "uncertainty": scores.get(pk), **row,
                    "classes": sorted(classes.get(pk, ())),
                    "thumbnail": signed_image_path(image_id, "thumbnail")})
    return {"total": len(rows), "offset": offset, "limit": limit, "results": out}


def learning_curve(project: Project) -> dict[str, Any]:
    """Gold mAP@0.4 of every model version against the number of images it trained
    on, and the active-learning rounds (when each started, how many labels it had)."""
    versions = [{"name": v.name, "train_images": len(v.train_images),
                 "map_40": v.metrics.get("map_40"), "coco_map": v.metrics.get("coco_map"),
                 "promoted": v.promoted, "created_at": v.created_at.isoformat()}
                for v in ModelVersion.objects.filter(project=project, kind="detector")
                .order_by("id")]
    rounds = [{"number": r.number, "strategy": r.strategy, "budget": r.budget,
               "labeled_before": r.labeled_before, "selected": len(r.selected),
               "model_version": r.model_version.name if r.model_version else None,
               "created_at": r.created_at.isoformat()}
              for r in project.al_rounds.filter(status="done").select_related("model_version")
              .order_by("number")]
    return {"versions": versions, "rounds": rounds}
