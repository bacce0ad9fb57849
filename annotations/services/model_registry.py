"""The model registry: evaluate every version on the project's gold set, promote
only when better, let admins force a promotion or roll back.

The registry is the only truth about which version serves a project: each
project has at most one ``ModelVersion`` with ``promoted=True`` and no file on
disk says otherwise (no marker).  Pre-labelling and Quick read query it; the ML
backend asks the platform per Label Studio project
(``GET /api/ml/projects/<ls_project_id>/model/``), so promoting project B never
changes what project A is served, and a rolled-back promotion leaves nothing behind.
Policy: a new version is promoted automatically only when its gold-set mAP@0.4
beats the promoted version's by at least ``project.promotion_threshold`` (the
first version of a project is promoted when it has gold metrics).

Detectors and image-level classifiers are versions of two kinds: a project has one
promoted version of each, a promotion or rollback touches only its own kind, and a
classifier is compared on its gold macro AUROC instead of mAP@0.4.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from django.db import transaction
from django.utils import timezone

from annotations import events
from annotations.errors import DomainError
from annotations.models import Image, ModelVersion, Project
from annotations.services import storage
from annotations.services.audit import audit_record
from annotations.services.classifier_training import classifier_gold_report
from annotations.services.labels import final_results
from annotations.services.segmenter_training import segmenter_gold_report
from annotations.services.storage import model_dir, read_display

Truth = dict[str, tuple[np.ndarray, np.ndarray]]
Preds = dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]


#: The files of a model version another host may fetch (what the loader reads and the
#: manifest its digest is computed over; ``training.artifacts``).
VERSION_FILE_NAMES = ("config.yaml", "model.pth", "manifest.sha256")


def version_file_open(*, name: str, filename: str) -> Any:
    """One file of a registered version, opened from the models store (the caller
    closes it): what an ML backend on another host fetches, then verifies against the
    registry's digest.  Names outside the registry or the version's files are 404."""
    if filename not in VERSION_FILE_NAMES or not ModelVersion.objects.filter(
            name=name).exists():
        raise DomainError("not_found", "no such model version file")
    try:
        return storage.open_read(storage.MODELS, f"{name}/{filename}")
    except DomainError as exc:
        raise DomainError("not_found", f"the files of model {name} are not stored") from exc


def gold_truth(project: Project) -> tuple[list[Image], Truth]:
    labels = final_results(project)
    gold = list(Image.objects.filter(project=project, is_gold=True,
                                     pseudo_id__in=list(labels)).order_by("pseudo_id"))
    return gold, {i.pseudo_id: (labels[i.pseudo_id].boxes, labels[i.pseudo_id].classes)
                  for i in gold}


def version_predict(version: ModelVersion, images: list[Image], batch_size: int = 4) -> Preds:
    from training.detector import Detector

    detector = Detector.from_dir(model_dir(version.name),
                                 expected_sha256=version.sha256, batch_size=batch_size)
    out: Preds = {}
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        for image, det in zip(batch, detector.predict([read_display(i) for i in batch]),
                              strict=True):
            sx, sy = image.width / det.image_size[1], image.height / det.image_size[0]
            out[image.pseudo_id] = (det.boxes * [sx, sy, sx, sy], det.scores, det.classes)
    return out


def _num(value: Any) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def gold_metrics(truth: Truth, preds: Preds, class_names: dict[int, str]) -> dict[str, Any]:
    """mAP@0.4 (VinBigData), per-class AP, COCO mAP@[.5:.95] and FROC, JSON-ready."""
    from training import metrics

    voc = metrics.map_at_iou(truth, preds, iou=0.4, classes=sorted(class_names))
    coco = metrics.coco_map(truth, preds)
    fr = metrics.froc(truth, preds, iou=0.4)
    return {
        "map_40": _num(voc["map"]),
        "ap_40": {class_names[c]: _num(v) for c, v in voc["ap"].items()},
        "coco_map": _num(coco["map"]), "coco_ap50": _num(coco["ap50"]),
        "froc": {str(r): _num(s) for r, s in zip(fr["fps_per_image"], fr["sensitivity"],
                                                  strict=True)},
        "froc_score": _num(fr["score"]),
    }


def version_gold_report(*, version: ModelVersion) -> dict[str, Any]:
    """The version's gold-set metrics, stored nowhere (the version's files must
    exist; its row need not, so a training can evaluate before it registers)."""
    if version.kind == ModelVersion.Kind.CLASSIFIER:
        return classifier_gold_report(version=version)
    if version.kind == ModelVersion.Kind.SEGMENTER:
        return segmenter_gold_report(version=version)
    gold, truth = gold_truth(version.project)
    if not gold:
        raise DomainError("no_gold_set", "the project has no gold images with final labels")
    preds = version_predict(version, gold)
    names = {lc.class_id: lc.name for lc in version.project.label_classes.filter(
        image_level=False)}
    report = gold_metrics(truth, preds, names)
    report["gold_images"] = len(gold)
    return report


def version_evaluate(*, version: ModelVersion) -> dict[str, Any]:
    report = version_gold_report(version=version)
    ModelVersion.objects.filter(pk=version.pk).update(metrics=report)
    version.metrics = report
    return report


@transaction.atomic
def version_promote(*, version: ModelVersion, actor: Any = None, reason: str = "") -> None:
    """Make ``version`` the one serving its project (and no other version of it).

    The project's row is locked first, so two promotions in one project cannot both
    leave a version promoted; other projects are untouched.
    """
    list(Project.objects.select_for_update().filter(pk=version.project_id).values_list(
        "pk", flat=True))
    changed = not ModelVersion.objects.filter(pk=version.pk, promoted=True).exists()
    ModelVersion.objects.filter(project=version.project, kind=version.kind,
                                promoted=True).update(promoted=False)
    ModelVersion.objects.filter(pk=version.pk).update(
        promoted=True, promoted_at=timezone.now(),
        promoted_by=actor if getattr(actor, "is_authenticated", False) else None)
    audit_record(action="model.promote", actor=actor, project=version.project,
                 target=version, detail={"reason": reason, "metrics": version.metrics})
    if changed:  # a forced re-promotion of the serving version changes nothing downstream
        events.emit(events.ModelPromoted(version_id=version.pk, project_id=version.project_id))


def version_rollback(*, project: Project, actor: Any = None,
                     kind: str = ModelVersion.Kind.DETECTOR) -> ModelVersion:
    """Promote the version (of ``kind``) that was in service before the current one."""
    current = ModelVersion.objects.filter(project=project, kind=kind, promoted=True).first()
    if current is None or current.parent is None:
        raise DomainError("conflict", "nothing to roll back to")
    version_promote(version=current.parent, actor=actor, reason=f"rollback from {current.name}")
    return current.parent


#: the gold figure each kind of version is promoted on
PROMOTION_METRIC = {ModelVersion.Kind.DETECTOR: "map_40",
                    ModelVersion.Kind.CLASSIFIER: "macro_auroc",
                    ModelVersion.Kind.SEGMENTER: "mean_dice"}


def _score(metrics: dict[str, Any], kind: str) -> float:
    value = metrics.get(PROMOTION_METRIC[kind])
    return float(value) if value is not None else -1.0


def version_evaluate_and_maybe_promote(*, version: ModelVersion) -> bool:
    try:
        version_evaluate(version=version)
    except DomainError as exc:
        audit_record(action="model.evaluate_skipped", project=version.project, target=version,
                     detail={"reason": exc.message})
        return False
    return version_promote_if_better(version=version)


def version_promote_if_better(*, version: ModelVersion) -> bool:
    """Promote an evaluated version when its gold figure (mAP@0.4; a classifier's
    macro AUROC) beats the promoted one's of its kind by the project's margin (the
    first version of a kind: when evaluated)."""
    report, kind = version.metrics, version.kind
    current = ModelVersion.objects.filter(project=version.project, kind=kind,
                                          promoted=True).first()
    margin = version.project.promotion_threshold
    if current is None or _score(report, kind) >= _score(current.metrics, kind) + margin:
        version_promote(version=version, reason="better on the gold set")
        return True
    key = PROMOTION_METRIC[kind]
    audit_record(action="model.not_promoted", project=version.project, target=version,
                 detail={key: report.get(key), f"promoted_{key}": current.metrics.get(key),
                         "margin": margin})
    return False
