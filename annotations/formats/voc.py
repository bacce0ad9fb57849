"""Pascal VOC XML (one file per image) <-> internal boxes.

Coordinate convention (the one thing to get right here):

* internally, pixel column ``i`` (0-based) covers the continuous interval
  ``[i, i + 1)``, and a box is ``[x_min, x_max)``;
* VOC writes 1-based pixel indices, both ends INCLUSIVE;
* so an integer box maps as ``xmin = x_min + 1``, ``xmax = x_max`` (same for
  y), and back as ``x_min = xmin - 1``, ``x_max = xmax``: integer boxes round
  trip exactly;
* non-integer coordinates are rounded half up to the nearest pixel edge
  first (``floor(v + 0.5)``), so a round trip moves each edge by at most
  0.5 px; a box that would cover no whole pixel after rounding is widened
  to one pixel (``xmax = xmin``), and ``xmin`` is capped at the image size.

Files are ``Annotations/<file stem>.xml`` with ``<filename>``, ``<size>``
(``depth`` 1: radiographs are greyscale) and one ``<object>`` per box
(``<name>`` = class name, ``<difficult>0``).  The format has no reader
identity nor image-level labels: an image with no objects imports as a
"No finding" read by ``reader``.

Parsing uses ``defusedxml`` (a pinned requirement: uploaded XML is untrusted)
with document type declarations forbidden outright: VOC files have none, and
a DTD is where entity-expansion bombs ("billion laughs"), external entities
and external DTD fetches live.  Such a file is refused, never expanded.  The
standard library only writes XML here.  Import is strict and
all-or-nothing: ``DomainError("invalid_voc", detail=[{"file": path,
"object": i, "error": ...}])`` (``object`` absent for file-level problems).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as _defused_fromstring

from annotations.consensus.types import ImageReads, ReaderRead
from annotations.errors import DomainError, Problems
from annotations.formats.common import (
    EDGE_TOLERANCE_PX,
    check_box,
    class_ids_by_name,
    file_stem,
)
from annotations.formats.records import BoxSource, ImageRecord, collect_reads
from annotations.taxonomy import NO_FINDING, LabelClassSpec

DEFAULT_READER = "VOC"
ANNOTATIONS_DIR = "Annotations"
CODE = "invalid_voc"


def xml_path(record: ImageRecord) -> str:
    """Relative path of an image's VOC file (``Annotations/<file stem>.xml``)."""
    return f"{ANNOTATIONS_DIR}/{file_stem(record.file_name)}.xml"


def _edge(v: float) -> int:
    return math.floor(v + 0.5)


def to_voc_box(box: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
    """Internal ``(x_min, y_min, x_max, y_max)`` -> VOC 1-based inclusive ints."""
    x1, y1, x2, y2 = box
    xmin, ymin = min(_edge(x1) + 1, width), min(_edge(y1) + 1, height)
    return xmin, ymin, max(_edge(x2), xmin), max(_edge(y2), ymin)


def from_voc_box(xmin: float, ymin: float, xmax: float, ymax: float) -> list[float]:
    """VOC 1-based inclusive -> internal continuous ``[x_min, x_max)``."""
    return [xmin - 1.0, ymin - 1.0, float(xmax), float(ymax)]


def _sub(parent: ET.Element, tag: str, text: Any = None) -> ET.Element:
    el = ET.SubElement(parent, tag)
    if text is not None:
        el.text = str(text)
    return el


def write_voc(
    records: Sequence[ImageRecord],
    source: BoxSource,
    taxonomy: Sequence[LabelClassSpec],
    *,
    reader: str | None = None,
    folder: str = "images",
) -> dict[str, str]:
    """One VOC XML text per record (boxes or not), keyed by ``xml_path``."""
    tracks = collect_reads(records, source, taxonomy, reader=reader)
    names = {s.class_id: s.name for s in taxonomy if not s.image_level}
    files: dict[str, str] = {}
    for rec in records:
        path = xml_path(rec)
        if path in files:
            raise DomainError(
                "invalid_export",
                f"two images share the VOC file {path}",
                detail=[{"image_id": rec.image_id, "error": f"file stem clash on {path}"}],
            )
        root = ET.Element("annotation")
        _sub(root, "folder", folder)
        _sub(root, "filename", rec.file_name)
        _sub(_sub(root, "source"), "database", "cxr-platform")
        size = _sub(root, "size")
        for tag, val in (("width", rec.width), ("height", rec.height), ("depth", 1)):
            _sub(size, tag, val)
        _sub(root, "segmented", 0)
        for track in tracks[rec.image_id]:
            for box, cid in zip(track.boxes.tolist(), track.classes.tolist(), strict=True):
                obj = _sub(root, "object")
                _sub(obj, "name", names[cid])
                _sub(obj, "pose", "Unspecified")
                _sub(obj, "truncated", 0)
                _sub(obj, "difficult", 0)
                bnd = _sub(obj, "bndbox")
                coords = to_voc_box(box, rec.width, rec.height)
                for tag, val in zip(("xmin", "ymin", "xmax", "ymax"), coords, strict=True):
                    _sub(bnd, tag, val)
        ET.indent(root)
        files[path] = ET.tostring(root, encoding="unicode") + "\n"
    return files


def parse_voc(
    files: Mapping[str, str],
    taxonomy: Sequence[LabelClassSpec],
    *,
    reader: str = DEFAULT_READER,
    records: Sequence[ImageRecord] | None = None,
    tolerance: float = EDGE_TOLERANCE_PX,
) -> list[ImageReads]:
    """VOC XML texts (``*.xml`` entries of ``files``) -> one read per file, sorted by id.

    Image id: with ``records``, the record whose ``file_name`` equals
    ``<filename>`` (or has its stem); the XML size must then match the
    record.  Without records: the stem of ``<filename>``, else of the path.
    Coordinates may be integers or decimals (some tools write ``12.5``).
    """
    if not reader:
        raise DomainError(CODE, "reader code must not be empty")
    by_name = class_ids_by_name(taxonomy)
    lookup: dict[str, ImageRecord] = {}
    for rec in records or ():
        lookup.setdefault(rec.file_name, rec)
        lookup.setdefault(file_stem(rec.file_name), rec)
    errors = Problems()
    out: dict[str, ImageReads] = {}
    for path in sorted(p for p in files if p.lower().endswith(".xml")):
        image = _parse_file(path, files[path], by_name, lookup, records is not None, reader,
                            tolerance, errors)
        if image is None:
            continue
        if image.image_id in out:
            errors.add(f"a second file for image {image.image_id!r}", file=path)
            continue
        out[image.image_id] = image
    errors.raise_if_any(CODE, "VOC entries")
    return [out[k] for k in sorted(out)]


def _number(el: ET.Element | None, tag: str) -> float | None:
    node = el.find(tag) if el is not None else None
    try:
        val = float((node.text or "").strip()) if node is not None else None
    except ValueError:
        return None
    return val if val is not None and math.isfinite(val) else None


def _parse_file(
    path: str,
    text: str,
    by_name: Mapping[str, int],
    lookup: Mapping[str, ImageRecord],
    use_records: bool,
    reader: str,
    tolerance: float,
    errors: Problems,
) -> ImageReads | None:
    try:
        root = _defused_fromstring(text, forbid_dtd=True)
    except DefusedXmlException:
        errors.add("XML with a DTD or entity declarations is not accepted", file=path)
        return None
    except (ET.ParseError, ValueError) as exc:
        errors.add(f"not well-formed XML: {exc}", file=path)
        return None
    if root.tag != "annotation":
        errors.add(f"root element is <{root.tag}>, expected <annotation>", file=path)
        return None
    file_name = (root.findtext("filename") or "").strip()
    size = root.find("size")
    width, height = _number(size, "width"), _number(size, "height")
    if width is None or height is None or width <= 0 or height <= 0:
        errors.add("<size> needs positive <width> and <height>", file=path)
        return None
    if use_records:
        rec = lookup.get(file_name) or lookup.get(file_stem(file_name or path))
        if rec is None:
            errors.add(f"no image record for filename {file_name!r}", file=path)
            return None
        if (rec.width, rec.height) != (width, height):
            errors.add(
                f"size {width:g}x{height:g} differs from the record's {rec.width}x{rec.height}",
                file=path,
            )
            return None
        image_id = rec.image_id
    else:
        image_id = file_stem(file_name or path)
    boxes, classes, bad = [], [], False
    for i, obj in enumerate(root.findall("object")):
        name = (obj.findtext("name") or "").strip()
        cid = by_name.get(name)
        bnd = obj.find("bndbox")
        vals = [_number(bnd, t) for t in ("xmin", "ymin", "xmax", "ymax")]
        msg = None
        if cid is None:
            msg = f"unknown class {name!r}"
        elif any(v is None for v in vals):
            msg = "<bndbox> needs numeric xmin, ymin, xmax, ymax"
        else:
            box = check_box(from_voc_box(*vals), width, height, tolerance)  # type: ignore[arg-type]
            if isinstance(box, str):
                msg = box
        if msg is not None:
            errors.add(msg, file=path, object=i)
            bad = True
            continue
        boxes.append(box)
        classes.append(cid)
    if bad:
        return None
    read = ReaderRead(
        reader,
        np.array(boxes, dtype=np.float64).reshape(-1, 4),
        np.array(classes, dtype=np.int64),
        frozenset() if boxes else frozenset({NO_FINDING}),
    )
    return ImageReads(image_id, width, height, [read])
