"""COCO detection JSON <-> internal boxes.

Export layout (``build_coco``; ``write_coco`` gives the JSON text, ``stream_coco`` the
same document written chunk by chunk for a project too large to hold):

* ``categories``: the box classes of the taxonomy, COCO ``id = class_id + 1``
  (COCO tools treat id 0 as background / "unset", so it is never used);
* ``images``: one per ``ImageRecord`` in the given order, ``id`` 1..n, plus
  the extension ``image_key`` (our string image id).  Images without boxes are
  kept: a training set needs its "No finding" negatives;
* ``annotations``: ``bbox = [x, y, w, h]`` in absolute pixels of the original
  image, ``area = w * h``, ``iscrowd = 0``; a consensus export adds ``score``,
  a per-reader export adds ``reader`` (extensions; COCO tools ignore them);
* per-image extensions keep image-level labels, on every image: ``reads =
  [{"reader", "image_labels"}]`` when exporting reads (every reader who read
  the image, so a reader who said "No finding" survives a round trip and an
  unread image stays unread), ``image_labels`` when exporting a consensus.

Import (``parse_coco``) is strict and all-or-nothing: every problem is listed
as ``{"section": "images" | "categories" | "annotations" | "root", "index": i,
"error": ...}`` in ``DomainError("invalid_coco")``.  Categories are matched to
the taxonomy by NAME (foreign files number them arbitrarily).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from annotations.consensus.types import ImageReads, ReaderRead
from annotations.errors import DomainError, Problems
from annotations.formats.common import (
    EDGE_TOLERANCE_PX,
    box_classes,
    check_box,
    class_ids_by_name,
    is_number,
)
from annotations.formats.records import BoxSource, ImageRecord, collect_reads
from annotations.taxonomy import NO_FINDING, LabelClassSpec

DEFAULT_READER = "COCO"
CODE = "invalid_coco"
DEFAULT_INFO = {
    "description": "Chest X-ray box annotations exported by cxr-platform",
    "version": "1.0",
    "contributor": "cxr-platform",
}


def category_id(class_id: int) -> int:
    """COCO category id of a taxonomy class id (shifted so 0 is never used)."""
    return class_id + 1


def _entries(
    records: Sequence[ImageRecord],
    source: BoxSource,
    taxonomy: Sequence[LabelClassSpec],
    *,
    reader: str | None,
    tolerance: float,
    first_image: int = 1,
    first_annotation: int = 1,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The ``images`` and ``annotations`` entries of ``records``, numbered from
    ``first_image`` / ``first_annotation`` (a streamed export numbers chunk after chunk)."""
    tracks = collect_reads(records, source, taxonomy, reader=reader, tolerance=tolerance)
    is_consensus = isinstance(source, Mapping)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for index, rec in enumerate(records, start=first_image):
        entry: dict[str, Any] = {
            "id": index,
            "file_name": rec.file_name,
            "width": rec.width,
            "height": rec.height,
            "image_key": rec.image_id,
        }
        if is_consensus:
            entry["image_labels"] = sorted(
                label for t in tracks[rec.image_id] for label in t.image_labels
            )
        else:
            entry["reads"] = [
                {"reader": t.reader, "image_labels": sorted(t.image_labels)}
                for t in tracks[rec.image_id]
            ]
        for track in tracks[rec.image_id]:
            for i, (box, cid) in enumerate(
                zip(track.boxes.tolist(), track.classes.tolist(), strict=True)
            ):
                x1, y1, x2, y2 = box
                w, h = x2 - x1, y2 - y1
                ann: dict[str, Any] = {
                    "id": first_annotation + len(annotations),
                    "image_id": index,
                    "category_id": category_id(int(cid)),
                    "bbox": [x1, y1, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
                if track.reader is not None:
                    ann["reader"] = track.reader
                if track.scores is not None:
                    ann["score"] = float(track.scores[i])
                annotations.append(ann)
        images.append(entry)
    return images, annotations


def _categories(taxonomy: Sequence[LabelClassSpec]) -> list[dict[str, Any]]:
    return [
        {"id": category_id(s.class_id), "name": s.name, "supercategory": "finding"}
        for s in box_classes(taxonomy)
    ]


def build_coco(
    records: Sequence[ImageRecord],
    source: BoxSource,
    taxonomy: Sequence[LabelClassSpec],
    *,
    reader: str | None = None,
    info: Mapping[str, Any] | None = None,
    tolerance: float = EDGE_TOLERANCE_PX,
) -> dict[str, Any]:
    """COCO document (a JSON-ready dict) for ``records``; see the module doc.

    ``reader`` picks one reader out of raw reads (None: all readers, each box
    tagged with its reader).  ``info`` entries override ``DEFAULT_INFO`` (no
    date is written unless given, so the output is deterministic).
    """
    images, annotations = _entries(records, source, taxonomy, reader=reader,
                                   tolerance=tolerance)
    return {
        "info": {**DEFAULT_INFO, **(info or {})},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": _categories(taxonomy),
    }


def write_coco(
    records: Sequence[ImageRecord],
    source: BoxSource,
    taxonomy: Sequence[LabelClassSpec],
    *,
    reader: str | None = None,
    info: Mapping[str, Any] | None = None,
) -> str:
    """``build_coco`` as JSON text (floats written exactly, so imports round-trip)."""
    doc = build_coco(records, source, taxonomy, reader=reader, info=info)
    return json.dumps(doc, indent=1, ensure_ascii=False) + "\n"


#: Annotations a streamed export keeps in memory before spilling them to a temporary
#: file (COCO lists every image before every annotation; a project's boxes wait there).
SPOOL_BYTES = 1 << 20


def stream_coco(
    chunks: Iterable[tuple[Sequence[ImageRecord], BoxSource]],
    taxonomy: Sequence[LabelClassSpec],
    *,
    reader: str | None = None,
    info: Mapping[str, Any] | None = None,
    tolerance: float = EDGE_TOLERANCE_PX,
    spool_bytes: int = SPOOL_BYTES,
) -> Iterator[str]:
    """The COCO document of ``build_coco``, written piece by piece from chunks of
    images, each with its own source: memory holds one chunk, whatever the project's size.

    The same document as ``build_coco`` over all chunks put together (ids run on
    across chunks; ``categories`` comes first, which JSON readers do not mind).
    Images are written as they come; their annotations wait in a temporary file (in
    memory up to ``spool_bytes``) and follow the last image.  One entry per line.
    """
    head = {"info": {**DEFAULT_INFO, **(info or {})}, "licenses": [],
            "categories": _categories(taxonomy)}
    yield json.dumps(head, ensure_ascii=False)[:-1] + ',\n"images": ['
    next_image = next_annotation = 1
    with tempfile.SpooledTemporaryFile(max_size=spool_bytes, mode="w+",
                                       encoding="utf-8") as spool:
        for records, source in chunks:
            images, annotations = _entries(
                records, source, taxonomy, reader=reader, tolerance=tolerance,
                first_image=next_image, first_annotation=next_annotation)
            if images:
                sep = "\n" if next_image == 1 else ",\n"
                yield sep + ",\n".join(json.dumps(e, ensure_ascii=False) for e in images)
            for ann in annotations:
                spool.write(("\n" if next_annotation == 1 else ",\n")
                            + json.dumps(ann, ensure_ascii=False))
                next_annotation += 1
            next_image += len(images)
        yield '\n],\n"annotations": ['
        spool.seek(0)
        while block := spool.read(1 << 16):
            yield block
    yield "\n]}\n"


def parse_coco(
    data: str | bytes | Mapping[str, Any],
    taxonomy: Sequence[LabelClassSpec],
    *,
    reader: str = DEFAULT_READER,
    tolerance: float = EDGE_TOLERANCE_PX,
) -> list[ImageReads]:
    """COCO JSON (text or parsed) -> reads per image, sorted by image id then reader.

    Image id: the ``image_key`` extension, else the ``file_name`` stem.  A box
    belongs to its ``reader`` extension, else to ``reader``.  Image-level
    labels come from the ``reads`` / ``image_labels`` extensions; an image
    without them and without boxes is a "No finding" read by ``reader`` (the
    COCO meaning of an annotated image with no objects).
    """
    if not reader:
        raise DomainError(CODE, "reader code must not be empty")
    doc = _load(data)
    errors = Problems()
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc.get(key), list):
            errors.add(f"{key!r} must be a list", section="root")
    errors.raise_if_any(CODE, "COCO content")

    images = _parse_images(doc["images"], errors)
    cats = _parse_categories(doc["categories"], class_ids_by_name(taxonomy), errors)
    boxes: dict[tuple[str, str], list[list[float]]] = {}
    classes: dict[tuple[str, str], list[int]] = {}
    for i, ann in enumerate(doc["annotations"]):
        parsed = _parse_annotation(ann, images, cats, reader, tolerance)
        if isinstance(parsed, str):
            errors.add(parsed, section="annotations", index=i)
            continue
        key, box, cid = parsed
        boxes.setdefault(key, []).append(box)
        classes.setdefault(key, []).append(cid)
    errors.raise_if_any(CODE, "COCO entries")

    labels: dict[tuple[str, str], frozenset[str]] = {}
    for image_id, _w, _h, ext in images.values():
        if ext is not None:
            for rd, lab in ext:
                labels[(image_id, rd or reader)] = lab
        elif not any(k[0] == image_id for k in boxes):
            labels[(image_id, reader)] = frozenset({NO_FINDING})
    reads: dict[str, list[ReaderRead]] = {}
    for image_id, rd in sorted(set(boxes) | set(labels)):
        key = (image_id, rd)
        reads.setdefault(image_id, []).append(
            ReaderRead(
                rd,
                np.array(boxes.get(key, []), dtype=np.float64).reshape(-1, 4),
                np.array(classes.get(key, []), dtype=np.int64),
                labels.get(key, frozenset()),
            )
        )
    return [
        ImageReads(image_id, w, h, reads.get(image_id, []))
        for image_id, w, h, _ext in sorted(images.values(), key=lambda im: im[0])
    ]


# An image as parsed: (our image id, width, height, extension labels); the
# labels are [(reader or None for the default reader, labels)] or None.
_Image = tuple[str, float, float, list[tuple[str | None, frozenset[str]]] | None]


def _load(data: str | bytes | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(data, str | bytes):
        try:
            data = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise DomainError(
                CODE, "not valid JSON", detail=[{"section": "root", "error": str(exc)}]
            ) from exc
    if not isinstance(data, Mapping):
        raise DomainError(
            CODE, "not a COCO document", detail=[{"section": "root", "error": "not an object"}]
        )
    return data


def _is_id(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, str) and bool(value)
    )


def _parse_images(items: list[Any], errors: Problems) -> dict[Any, _Image]:
    out: dict[Any, _Image] = {}
    keys: set[str] = set()
    for i, im in enumerate(items):
        where = {"section": "images", "index": i}
        if not isinstance(im, Mapping):
            errors.add("image entry must be an object", **where)
            continue
        missing = [k for k in ("id", "file_name", "width", "height") if k not in im]
        if missing:
            errors.add(f"missing keys {missing}", **where)
            continue
        if not _is_id(im["id"]) or not isinstance(im["file_name"], str) or not im["file_name"]:
            errors.add("id must be an integer or string, file_name a non-empty string", **where)
            continue
        w, h = im["width"], im["height"]
        if not (is_number(w) and is_number(h) and w > 0 and h > 0):
            errors.add(f"width/height must be positive numbers, got {w!r}/{h!r}", **where)
            continue
        key = im.get("image_key") or PurePosixPath(im["file_name"]).stem
        if not isinstance(key, str):
            errors.add("image_key must be a string", **where)
            continue
        ext = _image_labels(im)
        if isinstance(ext, str):
            errors.add(ext, **where)
            continue
        if im["id"] in out:
            errors.add(f"duplicate image id {im['id']!r}", **where)
            continue
        if key in keys:
            errors.add(f"two images map to the image id {key!r}", **where)
            continue
        keys.add(key)
        out[im["id"]] = (key, w, h, ext)
    return out


def _labels(value: Any) -> frozenset[str] | None:
    if isinstance(value, list) and all(isinstance(v, str) and v for v in value):
        return frozenset(value)
    return None


def _image_labels(im: Mapping[str, Any]) -> list[tuple[str | None, frozenset[str]]] | None | str:
    if "reads" in im:
        reads = im["reads"]
        if not isinstance(reads, list):
            return "reads must be a list"
        out: list[tuple[str | None, frozenset[str]]] = []
        for rd in reads:
            ok = isinstance(rd, Mapping) and isinstance(rd.get("reader"), str) and rd["reader"]
            lab = _labels(rd.get("image_labels", [])) if ok else None
            if lab is None:
                return "each reads entry needs a reader and a list of image_labels"
            out.append((rd["reader"], lab))
        if len({r for r, _ in out}) != len(out):
            return "a reader appears twice in reads"
        return out
    if "image_labels" in im:
        lab = _labels(im["image_labels"])
        return "image_labels must be a list of strings" if lab is None else [(None, lab)]
    return None


def _parse_categories(
    items: list[Any], by_name: Mapping[str, int], errors: Problems
) -> dict[Any, int | str]:
    """Category id -> class id, or the reason it cannot be used (reported when used)."""
    out: dict[Any, int | str] = {}
    for i, cat in enumerate(items):
        where = {"section": "categories", "index": i}
        if not isinstance(cat, Mapping) or not _is_id(cat.get("id")):
            errors.add("category needs an integer or string id", **where)
            continue
        name = cat.get("name")
        if not isinstance(name, str):
            errors.add("category needs a name", **where)
            continue
        if cat["id"] in out:
            errors.add(f"duplicate category id {cat['id']!r}", **where)
            continue
        cid = by_name.get(name.strip())
        out[cat["id"]] = cid if cid is not None else (
            f"category {name!r} is not a box class of the taxonomy"
        )
    return out


def _parse_annotation(
    ann: Any,
    images: Mapping[Any, _Image],
    cats: Mapping[Any, int | str],
    default_reader: str,
    tolerance: float,
) -> tuple[tuple[str, str], list[float], int] | str:
    if not isinstance(ann, Mapping):
        return "annotation must be an object"
    missing = [k for k in ("image_id", "category_id", "bbox") if k not in ann]
    if missing:
        return f"missing keys {missing}"
    image = images.get(ann["image_id"]) if _is_id(ann["image_id"]) else None
    if image is None:
        return f"unknown image id {ann['image_id']!r}"
    cid = cats.get(ann["category_id"]) if _is_id(ann["category_id"]) else None
    if cid is None:
        return f"unknown category id {ann['category_id']!r}"
    if isinstance(cid, str):
        return cid
    if ann.get("iscrowd", 0) not in (0, False):
        return "crowd annotations (iscrowd=1) are not supported"
    rd = ann.get("reader", default_reader)
    if not isinstance(rd, str) or not rd:
        return "reader must be a non-empty string"
    bbox = ann["bbox"]
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(is_number(v) for v in bbox)):
        return f"bbox must be four numbers [x, y, w, h], got {bbox!r}"
    x, y, w, h = (float(v) for v in bbox)
    box = check_box([x, y, x + w, y + h], image[1], image[2], tolerance)
    if isinstance(box, str):
        return box
    return (image[0], rd), box, cid
