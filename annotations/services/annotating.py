"""Recording readers' annotations: validated, versioned, never edited in place.

Every source (Label Studio webhooks and reconcile, CSV/COCO imports, the API)
goes through ``reader_annotation_record``.  A new version supersedes the
reader's current one for that image; unchanged content is not a new version,
so replays and reconciles are idempotent.
"""

from __future__ import annotations

import contextvars
import datetime as dt
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.db import connection, transaction
from django.utils import timezone

from annotations import events
from annotations.errors import DomainError
from annotations.models import (
    AnnotationBox,
    AnnotationMask,
    Assignment,
    Image,
    LabelClass,
    MaskClass,
    Reader,
    ReaderAnnotation,
)
from annotations.services.audit import audit_record
from annotations.services.storage import mask_digest, mask_write

#: Boxes may overshoot the image by this many pixels (rounding in clients); clipped.
EDGE_TOLERANCE = 1.0


@dataclass(frozen=True)
class BoxIn:
    """A box as submitted: class name (or class id) and original-pixel coordinates."""

    label: str | int
    x_min: float
    y_min: float
    x_max: float
    y_max: float


@dataclass(frozen=True)
class MaskIn:
    """A painted structure as submitted: mask class name and a boolean mask in the
    image's original pixels (several strokes of one class already merged)."""

    label: str
    mask: Any  # np.ndarray of bool, shape (image.height, image.width)


def _resolve_masks(image: Image, masks: Sequence[MaskIn]
                   ) -> list[tuple[MaskClass, Any, str]]:
    """``(class, mask, digest)`` per submitted mask; unknown classes, a mask of the wrong
    size or one class twice are refused; empty masks are dropped (nothing painted)."""
    if not masks:
        return []
    by_name = {mc.name: mc for mc in MaskClass.objects.filter(project_id=image.project_id)}
    out, seen = [], set()
    for m in masks:
        mc = by_name.get(m.label)
        if mc is None:
            raise DomainError("unknown_label", f"mask class {m.label!r} is not in this project")
        if m.label in seen:
            raise DomainError("invalid_mask", f"mask class {m.label!r} given twice")
        seen.add(m.label)
        arr = np.asarray(m.mask, dtype=bool)
        if arr.shape != (image.height, image.width):
            raise DomainError("invalid_mask", f"a {arr.shape} mask on a "
                              f"{image.height}x{image.width} image")
        if arr.any():
            out.append((mc, arr, mask_digest(arr)))
    return sorted(out, key=lambda t: t[0].index)


#: The taxonomy of each project read inside ``taxonomy_cached``, by project id.
_taxonomies: contextvars.ContextVar[dict[int, list[LabelClass]] | None] = \
    contextvars.ContextVar("taxonomies", default=None)


@contextmanager
def taxonomy_cached() -> Iterator[None]:
    """Read each project's label classes once in the block, not once per read.

    Why: a reconcile chunk records up to 50 reads of one project, and every read
    resolves its boxes against the taxonomy (two queries each).  Outside a block every
    read sees the taxonomy as stored at that moment; keep blocks short (one chunk).
    """
    token = _taxonomies.set({})
    try:
        yield
    finally:
        _taxonomies.reset(token)


def project_label_classes(project_id: int) -> list[LabelClass]:
    """The project's label classes (once per ``taxonomy_cached`` block)."""
    memo = _taxonomies.get()
    if memo is None:
        return list(LabelClass.objects.filter(project_id=project_id))
    if project_id not in memo:
        memo[project_id] = list(LabelClass.objects.filter(project_id=project_id))
    return memo[project_id]


def _classes(image: Image) -> tuple[dict[Any, LabelClass], set[str]]:
    rows = project_label_classes(image.project_id)
    by_key: dict[Any, LabelClass] = {}
    for lc in rows:
        if not lc.image_level:
            by_key[lc.name] = lc
            by_key[lc.class_id] = lc
    return by_key, {lc.name for lc in rows if lc.image_level}


def _validate_box(box: BoxIn, image: Image) -> tuple[float, float, float, float]:
    coords = [float(box.x_min), float(box.y_min), float(box.x_max), float(box.y_max)]
    w, h = image.width, image.height
    limits = [w, h, w, h]
    for i, v in enumerate(coords):
        if v != v or v < -EDGE_TOLERANCE or v > limits[i] + EDGE_TOLERANCE:
            raise DomainError("invalid_box", f"box {coords} lies outside the {w}x{h} image")
    x0, y0 = max(0.0, coords[0]), max(0.0, coords[1])
    x1, y1 = min(float(w), coords[2]), min(float(h), coords[3])
    if x1 <= x0 or y1 <= y0:
        raise DomainError("invalid_box", f"box {coords} has no area")
    return x0, y0, x1, y1


def _same_content(current: ReaderAnnotation, boxes: list[tuple], labels: list[str],
                  cancelled: bool, masks: list[tuple] = ()) -> bool:
    have = sorted(
        (b.label_class_id, b.x_min, b.y_min, b.x_max, b.y_max) for b in current.boxes.all()
    )
    want = sorted((lc.pk, *c) for lc, c in boxes)
    have_masks = sorted(current.masks.values_list("mask_class_id", "sha256"))
    want_masks = sorted((mc.pk, digest) for mc, _, digest in masks)
    return have == want and sorted(current.image_labels) == labels \
        and current.was_cancelled == cancelled and have_masks == want_masks


def _resolve(image: Image, boxes: Sequence[BoxIn], image_labels: Sequence[str]
             ) -> tuple[list[tuple[LabelClass, tuple]], list[str]]:
    """Boxes with their classes, validated and clipped; image labels sorted and checked."""
    by_key, image_level = _classes(image)
    resolved = []
    for box in boxes:
        lc = by_key.get(box.label)
        if lc is None:
            raise DomainError("unknown_label", f"label {box.label!r} is not in this project")
        resolved.append((lc, _validate_box(box, image)))
    labels = sorted(set(image_labels))
    unknown = [lab for lab in labels if lab not in image_level]
    if unknown:
        raise DomainError("unknown_label", f"image labels {unknown} are not in this project")
    return resolved, labels


def reader_annotation_matches(*, image: Image, reader: Reader, boxes: Sequence[BoxIn],
                              image_labels: Sequence[str] = (), was_cancelled: bool = False,
                              masks: Sequence[MaskIn] = ()) -> bool:
    """True when the reader's current read of ``image`` has exactly this content.

    Used where a read is frozen: seeing the same content again (a reconcile, a replay) is
    not a change, anything else is.
    """
    current = ReaderAnnotation.objects.filter(image=image, reader=reader,
                                              is_current=True).first()
    if current is None:
        return False
    resolved, labels = _resolve(image, boxes, image_labels)
    return _same_content(current, resolved, labels, was_cancelled,
                         _resolve_masks(image, masks))


@transaction.atomic
def reader_annotation_record(
    *,
    image: Image,
    reader: Reader,
    boxes: Sequence[BoxIn],
    image_labels: Sequence[str] = (),
    masks: Sequence[MaskIn] = (),
    source: str = ReaderAnnotation.Source.API,
    external_id: str = "",
    external_updated_at: dt.datetime | None = None,
    was_cancelled: bool = False,
    excluded_reason: str = "",
    actor: Any = None,
    complete_assignment: bool = True,
    trigger_consensus: bool = True,
) -> tuple[ReaderAnnotation, bool]:
    """Store a reader's read of an image; returns ``(annotation, created)``.

    Raises DomainError for unknown labels or boxes outside the image; nothing is
    written then.  An older ``external_updated_at`` than the stored one is
    ignored (out-of-order delivery), as is identical content (replay).
    """
    resolved, labels = _resolve(image, boxes, image_labels)
    painted = _resolve_masks(image, masks)

    # Serialise writers of one image: with no current row there is nothing else to
    # lock, and two concurrent first reads would both insert a "current" version.
    # FOR NO KEY UPDATE: writers of the image's reads still wait for each other, but rows
    # that merely reference it (a consensus run storing its result, boxes, recorded
    # versions) do not wait for a reconcile chunk that holds it, nor deadlock with one.
    no_key = connection.features.has_select_for_no_key_update
    Image.objects.select_for_update(no_key=no_key).filter(pk=image.pk).first()
    current = (ReaderAnnotation.objects.select_for_update(no_key=no_key)
               .filter(image=image, reader=reader, is_current=True).first())
    if current is not None:
        newer = current.external_updated_at
        if external_updated_at and newer and external_updated_at < newer:
            return current, False
        if _same_content(current, resolved, labels, was_cancelled, painted) and \
                current.excluded_reason == excluded_reason:
            return current, False
        ReaderAnnotation.objects.filter(pk=current.pk).update(is_current=False)
    assignment = Assignment.objects.filter(image=image, reader=reader).first()
    annotation = ReaderAnnotation.objects.create(
        image=image, reader=reader, assignment=assignment, source=source,
        external_id=external_id, version=(current.version + 1) if current else 1,
        image_labels=labels, was_cancelled=was_cancelled, excluded_reason=excluded_reason,
        external_updated_at=external_updated_at,
    )
    AnnotationBox.objects.bulk_create(
        AnnotationBox(annotation=annotation, label_class=lc, x_min=c[0], y_min=c[1],
                      x_max=c[2], y_max=c[3])
        for lc, c in resolved
    )
    for mc, arr, _ in painted:
        # content-addressed: a file written for a transaction that rolls back is an
        # orphan a later identical mask reuses, never a row pointing at nothing
        path, digest, area = mask_write(arr)
        AnnotationMask.objects.create(annotation=annotation, mask_class=mc, path=path,
                                      sha256=digest, area=area)
    if assignment is not None and complete_assignment and not excluded_reason:
        status = Assignment.Status.SKIPPED if was_cancelled else Assignment.Status.COMPLETED
        Assignment.objects.filter(pk=assignment.pk).update(status=status,
                                                           completed_at=timezone.now())
    audit_record(action="annotation.record", actor=actor, project=image.project,
                 target=annotation, detail={"reader": reader.code, "boxes": len(resolved),
                                            "masks": len(painted),
                                            "source": source, "version": annotation.version})
    if trigger_consensus and assignment is not None and image_reads_complete(image):
        # the image's k reads are in: the handlers start its consensus
        events.emit(events.ReadsCompleted(project_id=image.project_id, image_ids=(image.pk,)))
    return annotation, True


def image_reads_complete(image: Image) -> bool:
    """True when every assigned reader has finished (completed or skipped) the image."""
    statuses = list(image.assignments.values_list("status", flat=True))
    done = {Assignment.Status.COMPLETED, Assignment.Status.SKIPPED}
    return bool(statuses) and all(s in done for s in statuses)
