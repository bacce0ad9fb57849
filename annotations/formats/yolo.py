"""YOLO (Darknet / Ultralytics) label text files <-> internal boxes.

Export (``write_yolo``) returns ``{relative_path: text}``; the caller writes
the files.  Layout:

* ``labels/<file stem>.txt`` for EVERY image record, one line per box
  ``class cx cy w h``: box centre and size divided by the image width/height
  (so in [0, 1]), ``decimals`` digits (6 by default: 0.0005 px on a 1024 px
  image; raise it for exact round trips).  Images without boxes get an empty
  file: YOLO trainers treat it as a background ("No finding") image;
* ``classes.txt``: class names, line ``i`` is YOLO class ``i``;
* ``data.yaml``: ``nc`` and ``names`` (index -> name); the caller adds the
  dataset paths (``train``/``val``), which this pure module does not know.

YOLO class index = position of the class among the taxonomy's box classes
sorted by ``class_id`` (YOLO needs 0..n-1 without gaps; for the presets this
equals ``class_id``).  The format has no reader identity and no image-level
labels: exporting all readers pools their boxes, and on import every image
gets one read by ``reader`` -- with no boxes it is a "No finding" read.

Import (``parse_yolo``) needs the image records for the pixel sizes and is
strict and all-or-nothing: ``DomainError("invalid_yolo", detail=[{"file":
path, "line": n, "error": ...}])``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath

import numpy as np

from annotations.consensus.types import ImageReads, ReaderRead
from annotations.errors import DomainError, Problems
from annotations.formats.common import (
    EDGE_TOLERANCE_PX,
    box_classes,
    check_box,
    class_ids_by_name,
    file_stem,
)
from annotations.formats.records import BoxSource, ImageRecord, collect_reads, index_records
from annotations.taxonomy import NO_FINDING, LabelClassSpec

DEFAULT_READER = "YOLO"
LABELS_DIR = "labels"
CLASSES_FILE = "classes.txt"
DATA_FILE = "data.yaml"
CODE = "invalid_yolo"


def label_path(record: ImageRecord) -> str:
    """Relative path of an image's label file (``labels/<file stem>.txt``)."""
    return f"{LABELS_DIR}/{file_stem(record.file_name)}.txt"


def write_yolo(
    records: Sequence[ImageRecord],
    source: BoxSource,
    taxonomy: Sequence[LabelClassSpec],
    *,
    reader: str | None = None,
    decimals: int = 6,
) -> dict[str, str]:
    """Label files, ``classes.txt`` and ``data.yaml`` for ``records`` (see module doc)."""
    tracks = collect_reads(records, source, taxonomy, reader=reader)
    specs = box_classes(taxonomy)
    index = {s.class_id: i for i, s in enumerate(specs)}
    files: dict[str, str] = {}
    for rec in records:
        path = label_path(rec)
        if path in files:
            raise DomainError(
                "invalid_export",
                f"two images share the label file {path}",
                detail=[{"image_id": rec.image_id, "error": f"file stem clash on {path}"}],
            )
        lines = []
        for track in tracks[rec.image_id]:
            for (x1, y1, x2, y2), cid in zip(
                track.boxes.tolist(), track.classes.tolist(), strict=True
            ):
                vals = (
                    (x1 + x2) / 2 / rec.width,
                    (y1 + y2) / 2 / rec.height,
                    (x2 - x1) / rec.width,
                    (y2 - y1) / rec.height,
                )
                lines.append(" ".join([str(index[cid]), *(f"{v:.{decimals}f}" for v in vals)]))
        files[path] = "".join(line + "\n" for line in lines)
    files[CLASSES_FILE] = "".join(s.name + "\n" for s in specs)
    names = "".join(f"  {i}: {json.dumps(s.name)}\n" for i, s in enumerate(specs))
    files[DATA_FILE] = f"nc: {len(specs)}\nnames:\n{names}"
    return files


def parse_yolo(
    files: Mapping[str, str],
    records: Sequence[ImageRecord],
    taxonomy: Sequence[LabelClassSpec],
    *,
    reader: str = DEFAULT_READER,
    tolerance: float = EDGE_TOLERANCE_PX,
) -> list[ImageReads]:
    """Label files -> one read per record (sorted by image id).

    ``files`` maps paths to texts; label files are the ``*.txt`` files other
    than ``classes.txt`` and are matched to records by file stem (a label file
    without a record is an error; a record without a label file is a "No
    finding" image).  With ``classes.txt`` present, class indices are mapped
    by name to the taxonomy; without it, by the export's position rule.
    ``data.yaml`` is not read.
    """
    if not reader:
        raise DomainError(CODE, "reader code must not be empty")
    by_id = index_records(records)
    errors = Problems()
    by_stem: dict[str, ImageRecord] = {}
    for rec in by_id.values():
        if file_stem(rec.file_name) in by_stem:
            errors.add(f"two records share the file stem of {rec.file_name!r}", file=None)
        by_stem[file_stem(rec.file_name)] = rec
    classes = _class_map(files, taxonomy, errors)
    boxes: dict[str, list[list[float]]] = {}
    labels: dict[str, list[int]] = {}
    for path in sorted(files):
        if not path.endswith(".txt") or PurePosixPath(path).name == CLASSES_FILE:
            continue
        rec = by_stem.get(file_stem(path))
        if rec is None:
            errors.add("no image record has this file stem", file=path)
            continue
        if rec.image_id in boxes:
            errors.add(f"a second label file for image {rec.image_id!r}", file=path)
            continue
        boxes[rec.image_id], labels[rec.image_id] = [], []
        for n, line in enumerate(files[path].splitlines(), start=1):
            if not line.strip():
                continue
            parsed = _parse_line(line, rec, classes, tolerance)
            if isinstance(parsed, str):
                errors.add(parsed, file=path, line=n)
                continue
            boxes[rec.image_id].append(parsed[0])
            labels[rec.image_id].append(parsed[1])
    errors.raise_if_any(CODE, "YOLO label line(s)")
    out = []
    for image_id in sorted(by_id):
        rec = by_id[image_id]
        b, c = boxes.get(image_id, []), labels.get(image_id, [])
        read = ReaderRead(
            reader,
            np.array(b, dtype=np.float64).reshape(-1, 4),
            np.array(c, dtype=np.int64),
            frozenset() if b else frozenset({NO_FINDING}),
        )
        out.append(ImageReads(image_id, rec.width, rec.height, [read]))
    return out


def _class_map(
    files: Mapping[str, str], taxonomy: Sequence[LabelClassSpec], errors: Problems
) -> list[int]:
    """YOLO class index -> taxonomy class id (-1: not in the taxonomy, reported)."""
    found = [p for p in files if PurePosixPath(p).name == CLASSES_FILE]
    if not found:
        return [s.class_id for s in box_classes(taxonomy)]
    if len(found) > 1:
        errors.add(f"more than one {CLASSES_FILE}: {sorted(found)}", file=None)
        return []
    by_name = class_ids_by_name(taxonomy)
    out = []
    for n, name in enumerate(files[found[0]].splitlines(), start=1):
        cid = by_name.get(name.strip())
        if cid is None:
            errors.add(f"class {name!r} is not a box class of the taxonomy", file=found[0], line=n)
            cid = -1
        out.append(cid)
    return out


def _parse_line(
    line: str, rec: ImageRecord, classes: Sequence[int], tolerance: float
) -> tuple[list[float], int] | str:
    fields = line.split()
    if len(fields) != 5:
        return f"expected 5 fields 'class cx cy w h', got {len(fields)}"
    try:
        index = int(fields[0])
    except ValueError:
        return f"class {fields[0]!r} is not an integer"
    if not 0 <= index < len(classes):
        return f"class {index} is outside 0..{len(classes) - 1}"
    if classes[index] < 0:
        return f"class {index} is not in the taxonomy"
    try:
        cx, cy, w, h = (float(v) for v in fields[1:])
    except ValueError:
        return f"coordinates {fields[1:]} are not numbers"
    box = check_box(
        [
            (cx - w / 2) * rec.width,
            (cy - h / 2) * rec.height,
            (cx + w / 2) * rec.width,
            (cy + h / 2) * rec.height,
        ],
        rec.width,
        rec.height,
        tolerance,
    )
    if isinstance(box, str):
        return box
    return box, classes[index]
