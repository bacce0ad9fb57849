"""NIH ChestX-ray14 box list (``BBox_List_2017.csv``) -> ``ImageReads``.

Format: header ``Image Index,Finding Label,Bbox [x,y,w,h]`` (the published
file pads it with empty columns, and the bracketed header cell is split by
its own commas), then one row per box: image file name, finding label,
x, y, w, h in pixels of the 1024x1024 PNG.  The list holds positives only,
so every image in it gets one read (by ``reader``) with boxes and no
image-level labels.

Parsing is strict and all-or-nothing, like ``vinbigdata.parse_csv``: every
bad row is reported with its 1-based line number in
``DomainError("invalid_csv", detail=[{"line": n, "error": ...}])``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence

import numpy as np

from annotations.consensus.types import ImageReads, ReaderRead
from annotations.errors import DomainError, Problems
from annotations.formats.common import EDGE_TOLERANCE_PX, check_box
from annotations.taxonomy import NIH_CLASSES

HEADER = "Image Index,Finding Label,Bbox [x,y,w,h]"
DEFAULT_READER = "NIH"
#: Every ChestX-ray14 image was released as a 1024x1024 PNG.
NIH_IMAGE_SIZE = (1024, 1024)
#: The image-level label file says "Infiltration" where the box list says
#: "Infiltrate"; accept both so either spelling lands on the same class.
DEFAULT_ALIASES: Mapping[str, str] = {"Infiltration": "Infiltrate"}


def parse_nih_csv(
    text: str,
    *,
    reader: str = DEFAULT_READER,
    class_names: Sequence[str] = NIH_CLASSES,
    aliases: Mapping[str, str] = DEFAULT_ALIASES,
    image_size: tuple[int, int] | None = NIH_IMAGE_SIZE,
) -> list[ImageReads]:
    """Parse the box list into one read per image, images sorted by id.

    Class id = index of the label in ``class_names`` (``taxonomy.NIH_CLASSES``
    matches the ``nih`` preset).  The image id is the file name as written
    (``00013118_008.png``).  ``image_size`` (width, height) is recorded on
    every image and bounds-checks the boxes (1 px tolerance, clipped); pass
    None for unknown sizes.
    """
    if not reader:
        raise DomainError("invalid_csv", "reader code must not be empty")
    errors = Problems()
    rows = csv.reader(io.StringIO(text))
    header = next(rows, None)
    if header is None:
        raise DomainError("invalid_csv", "empty CSV", detail=[{"line": 1, "error": "no header"}])
    got = ",".join(h.strip() for h in header).rstrip(",")
    if got != HEADER:
        raise DomainError(
            "invalid_csv",
            "unexpected header",
            detail=[{"line": 1, "error": f"expected {HEADER!r}, got {got!r}"}],
        )
    ids = {name: i for i, name in enumerate(class_names)}
    width, height = image_size if image_size is not None else (None, None)
    boxes: dict[str, list[list[float]]] = {}
    classes: dict[str, list[int]] = {}
    for row in rows:
        line = rows.line_num
        cells = [c.strip() for c in row]
        while cells and not cells[-1]:
            cells.pop()
        if not cells:
            continue
        if len(cells) != 6:
            errors.add(f"expected 6 fields, got {len(cells)}", line=line)
            continue
        image_id, label, *nums = cells
        if not image_id:
            errors.add("Image Index must not be empty", line=line)
            continue
        cid = ids.get(aliases.get(label, label))
        if cid is None:
            errors.add(f"unknown finding label {label!r}", line=line)
            continue
        try:
            x, y, w, h = (float(v) for v in nums)
        except ValueError:
            errors.add(f"box {nums} is not four numbers", line=line)
            continue
        box = check_box([x, y, x + w, y + h], width, height, EDGE_TOLERANCE_PX)
        if isinstance(box, str):
            errors.add(box, line=line)
            continue
        boxes.setdefault(image_id, []).append(box)
        classes.setdefault(image_id, []).append(cid)
    errors.raise_if_any("invalid_csv", "row(s)")
    return [
        ImageReads(
            image_id,
            width,
            height,
            [
                ReaderRead(
                    reader,
                    np.array(boxes[image_id], dtype=np.float64),
                    np.array(classes[image_id], dtype=np.int64),
                )
            ],
        )
        for image_id in sorted(boxes)
    ]
