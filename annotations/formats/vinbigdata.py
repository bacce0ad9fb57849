"""VinBigData / VinDr-CXR training CSV <-> ``ImageReads``.

Format: ``image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max``, one
row per box; a reader who found nothing writes one "No finding" row with
empty coordinates.  ``rad_id`` becomes the reader code.

Parsing is strict and all-or-nothing: every malformed row is reported with
its 1-based line number (the header is line 1) in
``DomainError("invalid_csv", detail=[{"line": n, "error": ...}, ...])``;
nothing is returned partially, because a half-imported read set would bias
any consensus computed from it.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from annotations.consensus.types import ConsensusResult, ImageReads, ReaderRead
from annotations.errors import DomainError, Problems
from annotations.taxonomy import NO_FINDING, VINDR_CXR_CLASSES

COLUMNS = ("image_id", "class_name", "class_id", "rad_id", "x_min", "y_min", "x_max", "y_max")
CONSENSUS_READER = "consensus"
def _shown(header: list[str], limit: int = 120) -> str:
    """The header as found, cut short: a file of another format has no header at all, and
    its first line can be the whole file."""
    text = repr(header)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def parse_csv(
    text: str, class_names: Sequence[str] | None = VINDR_CXR_CLASSES
) -> list[ImageReads]:
    """Parse CSV text into reads grouped by image (sorted) then reader (sorted).

    ``class_names[i]`` must be the name of ``class_id`` i and "No finding" has
    id ``len(class_names)`` (the VinDr-CXR convention); pass ``None`` to accept
    any names as long as each ``class_id`` keeps one name throughout the file.
    Image sizes are unknown in this format (``width``/``height`` are None).
    """
    errors = Problems()
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        raise DomainError("invalid_csv", "empty CSV", detail=[{"line": 1, "error": "no header"}])
    header = [h.strip() for h in header]
    if sorted(header) != sorted(COLUMNS) or len(header) != len(COLUMNS):
        raise DomainError(
            "invalid_csv",
            "unexpected header",
            detail=[{"line": 1, "error": f"expected columns {list(COLUMNS)}, got "
                                         f"{_shown(header)}"}],
        )
    col = [header.index(c) for c in COLUMNS]
    nf_id = len(class_names) if class_names is not None else None
    seen_names: dict[int, str] = {}
    boxes: dict[tuple[str, str], list[list[float]]] = {}
    classes: dict[tuple[str, str], list[int]] = {}
    no_finding: dict[tuple[str, str], int] = {}
    box_line: dict[tuple[str, str], int] = {}

    for row in reader:
        line = reader.line_num
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(COLUMNS):
            errors.add(f"expected {len(COLUMNS)} fields, got {len(row)}", line=line)
            continue
        image_id, name, cid_s, rad, *coords = (row[i].strip() for i in col)
        if not image_id or not rad or not name:
            errors.add("image_id, class_name and rad_id must not be empty", line=line)
            continue
        try:
            cid = int(cid_s)
        except ValueError:
            errors.add(f"class_id {cid_s!r} is not an integer", line=line)
            continue
        msg = _check_class(name, cid, class_names, nf_id, seen_names)
        if msg:
            errors.add(msg, line=line)
            continue
        key = (image_id, rad)
        if name == NO_FINDING:
            if any(coords):
                errors.add("a No finding row must have empty coordinates", line=line)
            elif key in no_finding:
                errors.add(f"reader {rad} already said No finding (line {no_finding[key]})",
                           line=line)
            elif key in box_line:
                errors.add(f"reader {rad} drew a box on this image (line {box_line[key]})",
                           line=line)
            else:
                no_finding[key] = line
            continue
        box = _parse_box(coords)
        if isinstance(box, str):
            errors.add(box, line=line)
            continue
        if key in no_finding:
            errors.add(f"reader {rad} said No finding on this image (line {no_finding[key]})",
                       line=line)
            continue
        box_line.setdefault(key, line)
        boxes.setdefault(key, []).append(box)
        classes.setdefault(key, []).append(cid)

    errors.raise_if_any("invalid_csv", "row(s)")
    by_image: dict[str, list[ReaderRead]] = {}
    for key in sorted(set(boxes) | set(no_finding)):
        image_id, rad = key
        labels = frozenset({NO_FINDING}) if key in no_finding else frozenset()
        by_image.setdefault(image_id, []).append(
            ReaderRead(
                reader=rad,
                boxes=np.array(boxes.get(key, []), dtype=np.float64).reshape(-1, 4),
                classes=np.array(classes.get(key, []), dtype=np.int64),
                image_labels=labels,
            )
        )
    return [ImageReads(image_id, None, None, reads) for image_id, reads in by_image.items()]


def _check_class(
    name: str,
    cid: int,
    class_names: Sequence[str] | None,
    nf_id: int | None,
    seen: dict[int, str],
) -> str | None:
    if class_names is not None:
        expected = NO_FINDING if cid == nf_id else (
            class_names[cid] if 0 <= cid < len(class_names) else None
        )
        if expected is None:
            return f"class_id {cid} is outside the taxonomy (0..{nf_id})"
        if name != expected:
            return f"class_name {name!r} does not match class_id {cid} ({expected!r})"
        return None
    if cid < 0:
        return f"class_id {cid} is negative"
    if seen.setdefault(cid, name) != name:
        return f"class_id {cid} was {seen[cid]!r} earlier, now {name!r}"
    return None


def _parse_box(coords: list[str]) -> list[float] | str:
    if not all(coords):
        return "a box row needs x_min, y_min, x_max and y_max"
    try:
        x1, y1, x2, y2 = (float(c) for c in coords)
    except ValueError:
        return f"coordinates {coords} are not numbers"
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        return "coordinates must be finite"
    if min(x1, y1) < 0:
        return "coordinates must be >= 0"
    if x2 < x1 or y2 < y1:
        return "x_max/y_max must not be smaller than x_min/y_min"
    return [x1, y1, x2, y2]


def _fmt(v: float) -> str:
    return repr(float(v))


def _rows_for(
    image_id: str,
    rad: str,
    boxes: np.ndarray,
    classes: np.ndarray,
    labels: frozenset[str],
    class_names: Sequence[str],
) -> Iterable[list[str]]:
    for box, cid in zip(boxes.tolist(), classes.tolist(), strict=True):
        name = class_names[cid] if 0 <= cid < len(class_names) else str(cid)
        yield [image_id, name, str(cid), rad, *(_fmt(v) for v in box)]
    if NO_FINDING in labels and not len(boxes):
        yield [image_id, NO_FINDING, str(len(class_names)), rad, "", "", "", ""]


def _write(rows: Iterable[list[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(rows)
    return out.getvalue()


def write_csv(images: Sequence[ImageReads], class_names: Sequence[str] = VINDR_CXR_CLASSES) -> str:
    """Per-reader CSV (the input format); coordinates written exactly (``repr``)."""

    def rows() -> Iterable[list[str]]:
        for image in sorted(images, key=lambda im: im.image_id):
            for read in sorted(image.reads, key=lambda r: r.reader):
                yield from _rows_for(
                    image.image_id, read.reader, read.boxes, read.classes, read.image_labels,
                    class_names,
                )

    return _write(rows())


def write_consensus_csv(
    results: Mapping[str, ConsensusResult],
    class_names: Sequence[str] = VINDR_CXR_CLASSES,
    rad_id: str = CONSENSUS_READER,
) -> str:
    """Consensus as a CSV with ``rad_id`` "consensus" (scores are not written).

    Images whose consensus is undetermined (no boxes, no labels) get no row.
    """

    def rows() -> Iterable[list[str]]:
        for image_id in sorted(results):
            res = results[image_id]
            yield from _rows_for(
                image_id, rad_id, res.boxes, res.classes, res.image_labels, class_names
            )

    return _write(rows())
