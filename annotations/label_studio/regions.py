"""THE mapping between Label Studio regions and pixel boxes (one module, both sides use it).

Label Studio stores a ``rectanglelabels`` region as ``x, y, width, height`` in PERCENT of
the original image width/height, with a top-left origin and an optional rotation.  The
platform's internal box format is absolute pixels ``x_min, y_min, x_max, y_max`` in the
original image (VinBigData CSV convention).  The platform (annotation sync) and the ML
backend (predictions) both convert through this module, so a coordinate bug can only live
in one place.

Contracts:

* ``pixel -> percent -> pixel`` round-trips to ~1e-12 px (plain float64 arithmetic).
* Parsing is strict where silence would corrupt training data: unknown class names,
  rotated regions (``value.rotation`` or ``image_rotation`` != 0), several labels on one
  region, a region on an image of another size, or a box outside the image beyond a small
  numeric tolerance all raise ``DomainError("invalid_region", ...)``.  Overshoot within the
  tolerance (the editor's float rounding, e.g. ``x + width = 100.0000001``) is clipped.
* "No finding" and other image-level classes are ``choices`` items, never boxes.

Pure module: numpy and ``annotations.errors``; no Django.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from annotations.errors import DomainError
from annotations.label_studio.config import BOX_CONTROL, CHOICES_CONTROL, IMAGE_NAME

RECTANGLE_TYPE = "rectanglelabels"
CHOICES_TYPE = "choices"
#: Result item types that carry nothing the platform reads (links between regions).
_IGNORED_TYPES = frozenset({"relation"})
#: Percent overshoot outside [0, 100] that is clipped instead of rejected (0.01 % is
#: 0.3 px on a 3000 px radiograph: float noise, not a reader's intent).
DEFAULT_TOLERANCE_PERCENT = 0.01


def new_region_id() -> str:
    """A region id like the editor's own (10 url-safe characters)."""
    return uuid.uuid4().hex[:10]


def box_to_percent(box: Sequence[float], width: float, height: float) -> dict[str, float]:
    """Pixel ``(x_min, y_min, x_max, y_max)`` -> Label Studio ``{x, y, width, height}`` in %."""
    _check_size(width, height)
    x_min, y_min, x_max, y_max = (float(v) for v in box)
    if not (x_max > x_min and y_max > y_min):
        raise DomainError("invalid_region", f"degenerate box {list(box)}")
    return {
        "x": x_min / width * 100.0,
        "y": y_min / height * 100.0,
        "width": (x_max - x_min) / width * 100.0,
        "height": (y_max - y_min) / height * 100.0,
    }


def percent_to_box(value: Mapping[str, Any], width: float, height: float) -> np.ndarray:
    """Label Studio ``{x, y, width, height}`` in % -> pixel ``[x_min, y_min, x_max, y_max]``."""
    _check_size(width, height)
    x, y, w, h = (float(value[k]) for k in ("x", "y", "width", "height"))
    return np.array(
        [x * width / 100.0, y * height / 100.0, (x + w) * width / 100.0, (y + h) * height / 100.0],
        dtype=np.float64,
    )


def box_region(
    box: Sequence[float],
    label: str,
    *,
    original_width: int,
    original_height: int,
    score: float | None = None,
    region_id: str | None = None,
    from_name: str = BOX_CONTROL,
    to_name: str = IMAGE_NAME,
) -> dict[str, Any]:
    """One ``rectanglelabels`` result item (for predictions or annotations) from a pixel box."""
    item: dict[str, Any] = {
        "id": region_id or new_region_id(),
        "from_name": from_name,
        "to_name": to_name,
        "type": RECTANGLE_TYPE,
        "original_width": int(original_width),
        "original_height": int(original_height),
        "image_rotation": 0,
        "value": {
            **box_to_percent(box, original_width, original_height),
            "rotation": 0,
            "rectanglelabels": [label],
        },
    }
    if score is not None:
        item["score"] = float(score)
    return item


def choices_region(
    choices: Iterable[str],
    *,
    region_id: str | None = None,
    from_name: str = CHOICES_CONTROL,
    to_name: str = IMAGE_NAME,
) -> dict[str, Any]:
    """One ``choices`` result item holding image-level labels (e.g. "No finding")."""
    return {
        "id": region_id or new_region_id(),
        "from_name": from_name,
        "to_name": to_name,
        "type": CHOICES_TYPE,
        "value": {"choices": list(choices)},
    }


def build_result(
    boxes: np.ndarray | Sequence[Sequence[float]],
    labels: Sequence[str],
    *,
    original_width: int,
    original_height: int,
    scores: Sequence[float] | None = None,
    image_labels: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """A whole ``result`` list: one box item per row of ``boxes`` plus image-level choices."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(labels) != len(boxes) or (scores is not None and len(scores) != len(boxes)):
        raise DomainError("invalid_region", "boxes, labels and scores differ in length")
    result = [
        box_region(
            box, label, original_width=original_width, original_height=original_height,
            score=None if scores is None else scores[i],
        )
        for i, (box, label) in enumerate(zip(boxes, labels, strict=True))
    ]
    image_labels = list(image_labels)
    if image_labels:
        result.append(choices_region(image_labels))
    return result


@dataclass
class ParsedResult:
    """An annotation/prediction ``result`` list in the platform's terms."""

    boxes: np.ndarray  # (n, 4) float64 pixels x_min, y_min, x_max, y_max
    labels: list[str]
    image_labels: set[str] = field(default_factory=set)
    scores: np.ndarray | None = None  # (n,) float64, NaN where a region has no score
    region_ids: list[str | None] = field(default_factory=list)
    original_width: int | None = None
    original_height: int | None = None


def parse_result(
    result: Sequence[Mapping[str, Any]],
    *,
    box_classes: Iterable[str] | None = None,
    image_classes: Iterable[str] | None = None,
    original_width: int | None = None,
    original_height: int | None = None,
    box_control: str | None = None,
    tolerance_percent: float = DEFAULT_TOLERANCE_PERCENT,
) -> ParsedResult:
    """Parse a ``result`` list into pixel boxes, class names and image-level choices.

    ``box_classes``/``image_classes`` (None: accept any) reject unknown names.  The image
    size comes from each region's ``original_width``/``original_height``; when the caller
    knows the size it passes it and a region measured on another size is refused.
    ``box_control`` restricts boxes to one ``from_name``; choices are read from every
    ``choices`` item (configs from other tools name that control differently).
    """
    allowed_boxes = None if box_classes is None else set(box_classes)
    allowed_images = None if image_classes is None else set(image_classes)
    boxes: list[np.ndarray] = []
    labels: list[str] = []
    scores: list[float] = []
    ids: list[str | None] = []
    chosen: set[str] = set()
    size: tuple[int, int] | None = None
    if original_width is not None and original_height is not None:
        size = (int(original_width), int(original_height))
    for item in result:
        kind = item.get("type")
        if kind in _IGNORED_TYPES:
            continue
        if kind == CHOICES_TYPE:
            chosen.update(_choices(item, allowed_images))
            continue
        if kind != RECTANGLE_TYPE:
            raise DomainError("invalid_region", f"unsupported region type {kind!r}", detail=item)
        if box_control is not None and item.get("from_name") != box_control:
            raise DomainError(
                "invalid_region", f"box from unknown control {item.get('from_name')!r}"
            )
        item_size = _region_size(item, size)
        size = size or item_size
        labels.append(_box_label(item, allowed_boxes))
        boxes.append(_box(item, item_size, tolerance_percent))
        scores.append(float(item["score"]) if item.get("score") is not None else math.nan)
        ids.append(item.get("id"))
    return ParsedResult(
        boxes=np.array(boxes, dtype=np.float64).reshape(-1, 4),
        labels=labels,
        image_labels=chosen,
        scores=np.array(scores, dtype=np.float64),
        region_ids=ids,
        original_width=size[0] if size else None,
        original_height=size[1] if size else None,
    )


def _choices(item: Mapping[str, Any], allowed: set[str] | None) -> list[str]:
    names = list(item.get("value", {}).get("choices", []))
    unknown = [n for n in names if allowed is not None and n not in allowed]
    if unknown:
        raise DomainError("invalid_region", f"unknown image-level labels {unknown}",
                          detail={"unknown": unknown, "allowed": sorted(allowed or ())})
    return names


def _box_label(item: Mapping[str, Any], allowed: set[str] | None) -> str:
    names = item.get("value", {}).get(RECTANGLE_TYPE) or []
    if len(names) != 1:
        raise DomainError("invalid_region", f"a box needs exactly one label, got {names}")
    if allowed is not None and names[0] not in allowed:
        raise DomainError("invalid_region", f"unknown box label {names[0]!r}",
                          detail={"unknown": names[0], "allowed": sorted(allowed)})
    return str(names[0])


def _region_size(item: Mapping[str, Any], expected: tuple[int, int] | None) -> tuple[int, int]:
    w, h = item.get("original_width"), item.get("original_height")
    if w is None or h is None:
        if expected is None:
            raise DomainError("invalid_region", "region has no original_width/original_height")
        return expected
    got = (int(w), int(h))
    if expected is not None and got != expected:
        raise DomainError("invalid_region", f"region measured on a {got} image, expected "
                          f"{expected}", detail={"got": got, "expected": expected})
    return got


def _box(item: Mapping[str, Any], size: tuple[int, int], tolerance: float) -> np.ndarray:
    value = item.get("value") or {}
    for key, angle in (("rotation", value.get("rotation")),
                       ("image_rotation", item.get("image_rotation"))):
        turned = float(angle or 0.0) % 360.0
        if min(turned, 360.0 - turned) > 1e-6:
            raise DomainError("invalid_region", f"rotated region ({key}={angle}) not supported")
    try:
        x, y, w, h = (float(value[k]) for k in ("x", "y", "width", "height"))
    except (KeyError, TypeError, ValueError) as exc:
        raise DomainError("invalid_region", f"bad box value {value!r}") from exc
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
        raise DomainError("invalid_region", f"degenerate box {value!r}")
    x0, y0 = _clip(x, tolerance), _clip(y, tolerance)
    x1, y1 = _clip(x + w, tolerance), _clip(y + h, tolerance)
    if not (x1 > x0 and y1 > y0):
        raise DomainError("invalid_region", f"degenerate box after clipping {value!r}")
    width, height = size
    return np.array([x0 * width / 100.0, y0 * height / 100.0, x1 * width / 100.0,
                     y1 * height / 100.0], dtype=np.float64)


def _clip(percent: float, tolerance: float) -> float:
    if percent < -tolerance or percent > 100.0 + tolerance:
        raise DomainError("invalid_region", f"coordinate {percent}% lies outside the image")
    return min(max(percent, 0.0), 100.0)


def _check_size(width: float, height: float) -> None:
    if not (width > 0 and height > 0):
        raise DomainError("invalid_region", f"bad image size {width}x{height}")
