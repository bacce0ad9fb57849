"""Model pre-labels in Label Studio's format (shown to readers only when the
project's ``show_prelabels`` switch is on)."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from annotations.label_studio.config import EXPLANATION_CONTROL
from annotations.label_studio.masks import brush_region
from annotations.label_studio.regions import build_result
from annotations.models import Image, Prediction
from annotations.services.storage import mask_read
from annotations.taxonomy import NO_FINDING


def prelabel_for(image: Image, model_version: str | None = None) -> dict[str, Any] | None:
    """The newest prediction of ``image`` (of ``model_version`` if given) as
    ``{result, score, model_version, prediction, mask_prediction}`` (the box and the
    mask prediction shown, either may be None).

    A detector's boxes and a segmenter's masks are predictions of two versions; one
    pre-label shows both: the requested (or newest) prediction, completed by the newest
    of the other kind (a task gets one pre-label, so it carries all the models say).
    """
    qs = Prediction.objects.filter(image=image).order_by("-updated_at", "-id")
    pred = (qs.filter(model_version=model_version) if model_version else qs).first()
    if pred is None:
        return None
    boxes_row = qs.filter(masks={}).first() if pred.masks else pred
    masks_row = pred if pred.masks else qs.exclude(masks={}).first()
    result: list[dict[str, Any]] = []
    if boxes_row is not None:
        floor = settings.PRELABEL_MIN_SCORE_SHOWN
        rows = [b for b in boxes_row.boxes
                if b.get("box") and float(b.get("score", 1.0)) >= floor]
        result += build_result(
            [b["box"] for b in rows], [b["label"] for b in rows],
            original_width=image.width, original_height=image.height,
            scores=[float(b.get("score", 1.0)) for b in rows],
            image_labels=_predicted_labels(image, boxes_row.image_scores or {}))
        if image.project.explanation_prelabels:
            result += _explanation_regions(boxes_row)
    if masks_row is not None:
        result += _mask_regions(masks_row)
    return {"result": result, "score": pred.score, "model_version": pred.model_version,
            "prediction": boxes_row, "mask_prediction": masks_row}


def _explanation_regions(pred: Prediction) -> list[dict[str, Any]]:
    """Where the classifier looked for each finding it called, as brush regions of the
    explanation control (readers see them as an overlay; they are never read back)."""
    found = (pred.image_scores or {}).get("explanations") or {}
    return [brush_region(mask_read(e["path"]), name, score=e.get("p"),
                         from_name=EXPLANATION_CONTROL)
            for name, e in sorted(found.items()) if e.get("area")]


def _mask_regions(pred: Prediction) -> list[dict[str, Any]]:
    """A segmenter's masks as brush regions (at the display size readers paint on)."""
    out = []
    for name, entry in sorted((pred.masks.get("classes") or {}).items()):
        if entry.get("area"):
            out.append(brush_region(mask_read(entry["path"]), name,
                                    score=entry.get("score")))
    return out


#: A classifier's probability at which an image-level finding is pre-selected.
FINDING_PRESELECT = 0.5


def _predicted_labels(image: Image, scores: dict[str, Any]) -> list[str]:
    """The image-level choices a pre-label pre-selects: "No finding" on a film the
    two-stage gate called normal; otherwise the project's image-level findings the
    classifier gives at least ``FINDING_PRESELECT`` (box classes are boxes, and "No
    finding" is only the gate's call)."""
    if scores.get("called_normal"):
        return [NO_FINDING]
    probs = scores.get("probs") or {}
    image_level = set(image.project.label_classes.filter(image_level=True)
                      .exclude(name=NO_FINDING).values_list("name", flat=True))
    return sorted(n for n, p in probs.items() if n in image_level and p >= FINDING_PRESELECT)
