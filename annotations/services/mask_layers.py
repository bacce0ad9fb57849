"""Masks in the viewer: outlines per reader, for the final masks and for the mask
model, and the cardiothoracic ratio measured on the final (or model) masks.

Blinding is the caller's (``image_layers`` decides which layers a user sees); this
module only turns stored masks into what is drawn.  Coordinates are original pixels,
like the boxes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from annotations.errors import DomainError
from annotations.imaging.ctr import cardiothoracic_ratio
from annotations.imaging.outlines import mask_outline
from annotations.models import Image, MaskClass, Prediction, ReaderAnnotation
from annotations.services.segmenter_training import final_masks
from annotations.services.storage import mask_read
from annotations.taxonomy import ANATOMY_MASK_CLASSES

RIGHT_LUNG, LEFT_LUNG, HEART = ANATOMY_MASK_CLASSES
CARDIOMEGALY = "Cardiomegaly"


def mask_colors(image: Image) -> dict[str, str]:
    return dict(MaskClass.objects.filter(project_id=image.project_id)
                .values_list("name", "color"))


def _outlines(masks: dict[str, np.ndarray], colors: dict[str, str],
              scale: tuple[float, float] = (1.0, 1.0)) -> list[dict[str, Any]]:
    return [{"label": name, "color": colors.get(name, "#ffffff"),
             "polygons": mask_outline(m, scale=scale)}
            for name, m in sorted(masks.items()) if m.any()]


def ctr_of(masks: dict[str, np.ndarray], threshold: float,
           scale: tuple[float, float] = (1.0, 1.0)) -> dict[str, Any] | None:
    """The ratio, its two lines (original pixels) and the cardiomegaly flag; None when
    the heart or a lung field is missing."""
    if not all(n in masks for n in (HEART, RIGHT_LUNG, LEFT_LUNG)):
        return None
    try:
        got = cardiothoracic_ratio(masks[HEART], masks[RIGHT_LUNG], masks[LEFT_LUNG])
    except DomainError:
        return None
    sx, sy = scale
    # pixel i covers [i, i + 1): a line runs from its first pixel's left edge to its
    # last pixel's right edge, through the row's centre
    lines = {k: {"x0": ln.x0 * sx, "x1": (ln.x1 + 1) * sx, "y": (ln.y + 0.5) * sy}
             for k, ln in (("cardiac", got.cardiac), ("thoracic", got.thoracic))}
    return {"ratio": round(got.ratio, 4), "threshold": threshold,
            "cardiomegaly": got.ratio > threshold, **lines}


def has_masks(image: Image) -> bool:
    return MaskClass.objects.filter(project_id=image.project_id).exists()


def annotation_outlines(annotation: ReaderAnnotation, colors: dict[str, str]
                        ) -> list[dict[str, Any]]:
    return _outlines({m.mask_class.name: mask_read(m.path)
                      for m in annotation.masks.select_related("mask_class")}, colors)


def final_mask_layer(image: Image) -> dict[str, Any]:
    """Outlines and CTR of the image's final masks (empty when it has none)."""
    paths = final_masks(image.project, [image]).get(image.pseudo_id, {})
    masks = {name: mask_read(p) for name, p in paths.items()}
    return {"outlines": _outlines(masks, mask_colors(image)),
            "ctr": ctr_of(masks, image.project.ctr_threshold)}


def model_mask_layer(image: Image) -> dict[str, Any] | None:
    """Outlines and CTR of the newest mask-model prediction (masks at the display size,
    drawn in original pixels)."""
    pred = (Prediction.objects.filter(image=image).exclude(masks={})
            .order_by("-updated_at", "-id").first())
    if pred is None:
        return None
    masks = {name: mask_read(e["path"]) for name, e in (pred.masks.get("classes") or {}).items()}
    if not masks:
        return None
    h, w = next(iter(masks.values())).shape
    scale = (image.width / w, image.height / h)
    return {"name": f"Masks {pred.model_version}", "model_version": pred.model_version,
            "outlines": _outlines(masks, mask_colors(image), scale),
            "ctr": ctr_of(masks, image.project.ctr_threshold, scale)}
