"""Feedback on the model: implicit (how readers treated shown pre-labels) and
explicit (ratings), summarised per model version and class."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import cv2
import numpy as np
from django.db import transaction

from annotations.consensus.mask_agreement import dice
from annotations.errors import DomainError
from annotations.models import (
    LabelClass,
    MaskClass,
    MaskFeedback,
    Prediction,
    PredictionFeedback,
    PredictionRating,
    Project,
    Reader,
    ReaderAnnotation,
    WorkspaceTask,
)
from annotations.prediction_feedback import classify
from annotations.selectors import image_list_visible
from annotations.services.storage import mask_read


@transaction.atomic
def feedback_record(annotation: ReaderAnnotation) -> int:
    """Classify the reader's final boxes against the pre-label they were shown, and
    measure how much they changed its masks.

    Replaces earlier feedback of the same reader on the same prediction (the
    newest annotation version is the reader's final word).
    """
    task = WorkspaceTask.objects.filter(
        workspace__reader=annotation.reader, image=annotation.image,
    ).select_related("prediction", "mask_prediction").first()
    if task is None:
        return 0
    n = 0
    if task.mask_prediction is not None:
        n += _mask_feedback(annotation, task.mask_prediction)
    if task.prediction is None:
        return n
    return n + _box_feedback(annotation, task.prediction)


def _mask_feedback(annotation: ReaderAnnotation, pred: Prediction) -> int:
    """Dice per mask class between the pre-painted mask (display size, scaled to the
    film) and the reader's final mask; a class on one side only scores 0."""
    image = annotation.image
    classes = {mc.name: mc for mc in MaskClass.objects.filter(project_id=image.project_id)}
    read = {m.mask_class.name: mask_read(m.path)
            for m in annotation.masks.select_related("mask_class")}
    rows = []
    for name, entry in sorted((pred.masks.get("classes") or {}).items()):
        if name not in classes or (not entry.get("area") and name not in read):
            continue
        shown = mask_read(entry["path"])
        if shown.shape != (image.height, image.width):
            shown = cv2.resize(shown.astype(np.uint8), (image.width, image.height),
                               interpolation=cv2.INTER_NEAREST).astype(bool)
        final = read.get(name, np.zeros(shown.shape, bool))
        rows.append(MaskFeedback(
            prediction=pred, annotation=annotation, reader=annotation.reader,
            model_version=pred.model_version, mask_class=classes[name],
            dice=dice(shown, final), predicted_area=int(shown.sum()),
            read_area=int(final.sum())))
    MaskFeedback.objects.filter(prediction=pred, reader=annotation.reader).delete()
    MaskFeedback.objects.bulk_create(rows)
    return len(rows)


def _box_feedback(annotation: ReaderAnnotation, pred: Prediction) -> int:
    project_id = annotation.image.project_id
    classes = {lc.name: lc for lc in LabelClass.objects.filter(project_id=project_id)}
    shown = [b for b in pred.boxes if b.get("label") in classes]
    boxes = list(annotation.boxes.select_related("label_class"))
    outcomes = classify(
        np.array([b["box"] for b in shown], dtype=np.float64).reshape(-1, 4),
        [classes[b["label"]].class_id for b in shown],
        np.array([[b.x_min, b.y_min, b.x_max, b.y_max] for b in boxes]).reshape(-1, 4),
        [b.label_class.class_id for b in boxes],
    )
    by_id = {lc.class_id: lc for lc in classes.values()}
    PredictionFeedback.objects.filter(prediction=pred, reader=annotation.reader).delete()
    PredictionFeedback.objects.bulk_create(
        PredictionFeedback(
            prediction=pred, annotation=annotation, reader=annotation.reader,
            model_version=pred.model_version, outcome=o.outcome, iou=o.iou,
            label_class=by_id[o.predicted_class if o.predicted_class is not None
                              else o.reader_class],
            predicted_index=o.predicted_index)
        for o in outcomes)
    return len(outcomes)


def mask_feedback_summary(project: Project) -> list[dict[str, Any]]:
    """Per mask model version and class: how much readers changed its masks."""
    rows = MaskFeedback.objects.filter(prediction__image__project=project).values_list(
        "model_version", "mask_class__name", "dice")
    by: dict[tuple[str, str], list[float]] = defaultdict(list)
    for version, name, d in rows:
        by[(version, name)].append(d)
    return [{"model_version": v, "mask_class": n, "reads": len(d),
             "mean_dice": float(np.mean(d)), "median_dice": float(np.median(d)),
             "unchanged": sum(x >= 0.999 for x in d)}
            for (v, n), d in sorted(by.items())]


def feedback_summary(project: Project) -> list[dict[str, Any]]:
    """Per model version and class: acceptance, adjustment, rejection rates and misses."""
    counts: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    rows = PredictionFeedback.objects.filter(prediction__image__project=project).values_list(
        "model_version", "label_class__name", "outcome")
    for version, name, outcome in rows:
        counts[(version, name)][outcome] += 1
    out = []
    for (version, name), c in sorted(counts.items()):
        shown = c["accepted"] + c["adjusted"] + c["rejected"]
        out.append({
            "model_version": version, "class_name": name, "predicted": shown,
            "accepted": c["accepted"], "adjusted": c["adjusted"], "rejected": c["rejected"],
            "missed": c["missed"],
            "acceptance_rate": c["accepted"] / shown if shown else None,
            "adjustment_rate": c["adjusted"] / shown if shown else None,
            "rejection_rate": c["rejected"] / shown if shown else None,
            # of the boxes readers finally drew, the share the model had not proposed
            "miss_rate": (c["missed"] / (c["accepted"] + c["adjusted"] + c["missed"])
                          if c["accepted"] + c["adjusted"] + c["missed"] else None),
        })
    return out


def prediction_rate(*, prediction: Prediction, reader: Reader, useful: bool,
                    comment: str = "") -> PredictionRating:
    if not image_list_visible(reader.user).filter(pk=prediction.image_id).exists():
        raise DomainError("not_found", "no such prediction")
    rating, _ = PredictionRating.objects.update_or_create(
        prediction=prediction, reader=reader, defaults={"useful": useful, "comment": comment})
    return rating
