"""What every exporter needs besides boxes: image records, and one view of the box sources.

Exports take boxes from either a consensus (``Mapping[image_id,
ConsensusResult]``) or raw reads (``Sequence[ImageReads]``, one reader or all).
``collect_reads`` turns both into the same per-image list of ``ExportRead`` and
validates them once against the image records and the taxonomy, so each
format module only converts coordinates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from annotations.consensus.types import ConsensusResult, ImageReads
from annotations.errors import DomainError, Problems
from annotations.formats.common import EDGE_TOLERANCE_PX, box_classes, check_box
from annotations.taxonomy import LabelClassSpec

#: Boxes to export: a consensus per image id, or raw reads.
BoxSource = Mapping[str, ConsensusResult] | Sequence[ImageReads]


@dataclass(frozen=True)
class ImageRecord:
    """An image as export formats need it: platform id, file name, pixel size.

    The size is the ORIGINAL image size, the space all internal boxes live in;
    formats with relative coordinates (YOLO) cannot be written without it.
    """

    image_id: str
    file_name: str
    width: int
    height: int

    def __post_init__(self) -> None:
        if not self.image_id or not self.file_name:
            raise DomainError("invalid_export", "image_id and file_name must not be empty")
        for v in (self.width, self.height):
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise DomainError(
                    "invalid_export",
                    f"image {self.image_id!r}: width and height must be positive integers",
                )


@dataclass(frozen=True, eq=False)
class ExportRead:
    """Boxes of one track on one image; ``reader`` is None for a consensus.

    ``scores`` is set only for a consensus (readers give no confidences).
    """

    reader: str | None
    boxes: np.ndarray
    classes: np.ndarray
    scores: np.ndarray | None
    image_labels: frozenset[str]


def index_records(records: Sequence[ImageRecord]) -> dict[str, ImageRecord]:
    """Records by image id; duplicates are an error (ids key every format)."""
    by_id: dict[str, ImageRecord] = {}
    dups = []
    for rec in records:
        if rec.image_id in by_id:
            dups.append(rec.image_id)
        by_id[rec.image_id] = rec
    if dups:
        raise DomainError("invalid_export", "duplicate image ids in records", detail=sorted(dups))
    return by_id


def collect_reads(
    records: Sequence[ImageRecord],
    source: BoxSource,
    taxonomy: Sequence[LabelClassSpec],
    *,
    reader: str | None = None,
    tolerance: float = EDGE_TOLERANCE_PX,
) -> dict[str, list[ExportRead]]:
    """Per-image export tracks, keyed by image id in ``records`` order.

    Every record gets an entry (an empty list when the source has nothing on
    it) so "No finding" images survive into training sets.  With raw reads,
    ``reader`` keeps only that reader's reads (None: all readers); it is
    ignored for a consensus.  Boxes are checked against the record size (see
    ``check_box``: clipped within ``tolerance``); any problem -- an image
    missing from ``records``, a size mismatch, a class that is not a box class
    of ``taxonomy`` -- raises ``DomainError("invalid_export")`` with all of them.
    """
    by_id = index_records(records)
    valid = {s.class_id for s in box_classes(taxonomy)}
    errors = Problems()
    out: dict[str, list[ExportRead]] = {rec.image_id: [] for rec in records}

    def add(image_id: str, track: ExportRead) -> None:
        rec = by_id.get(image_id)
        if rec is None:
            errors.add("image is not in the export records", image_id=image_id)
            return
        boxes = []
        for i, (box, cid) in enumerate(zip(track.boxes, track.classes, strict=True)):
            where = {"image_id": image_id, "reader": track.reader, "box": i}
            if int(cid) not in valid:
                errors.add(f"class id {int(cid)} is not a box class of the taxonomy", **where)
            checked = check_box(box, rec.width, rec.height, tolerance)
            if isinstance(checked, str):
                errors.add(checked, **where)
            else:
                boxes.append(checked)
        if len(boxes) == len(track.boxes):
            track = ExportRead(
                track.reader,
                np.array(boxes, dtype=np.float64).reshape(-1, 4),
                track.classes,
                track.scores,
                track.image_labels,
            )
        out[image_id].append(track)

    if isinstance(source, Mapping):
        for image_id in sorted(source):
            res = source[image_id]
            add(image_id, ExportRead(None, res.boxes, res.classes, res.scores, res.image_labels))
    else:
        seen: set[str] = set()
        for image in source:
            if image.image_id in seen:
                errors.add("image appears twice in the reads", image_id=image.image_id)
                continue
            seen.add(image.image_id)
            rec = by_id.get(image.image_id)
            if rec is not None and _size_differs(image, rec):
                errors.add(
                    f"reads say {image.width}x{image.height}, record says "
                    f"{rec.width}x{rec.height}",
                    image_id=image.image_id,
                )
            for read in sorted(image.reads, key=lambda r: r.reader):
                if reader is None or read.reader == reader:
                    add(
                        image.image_id,
                        ExportRead(read.reader, read.boxes, read.classes, None, read.image_labels),
                    )
    if errors:
        raise errors.error("invalid_export", f"{errors.total} problem(s) in the export data")
    return out


def _size_differs(image: ImageReads, rec: ImageRecord) -> bool:
    return (image.width is not None and float(image.width) != rec.width) or (
        image.height is not None and float(image.height) != rec.height
    )
