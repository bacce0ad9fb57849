"""Mask exports other than DICOM SEG: COCO with RLE segmentations, and PNG masks.

* COCO: one annotation per image and mask class, ``segmentation`` an uncompressed-free
  RLE (``{"size": [h, w], "counts": str}``) encoded by pycocotools, so any COCO reader
  (pycocotools, detectron2, torchvision) decodes the exact pixels; ``bbox`` and ``area``
  computed by pycocotools from the same code.
* PNG: ``<image>/<class code>.png`` per mask, 8-bit 0/255, original pixels.

Pure module: numpy, OpenCV, pycocotools; no Django.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence

import cv2
import numpy as np
from pycocotools import mask as coco_mask

from annotations.formats.records import ImageRecord
from annotations.taxonomy import MaskClassSpec


def mask_to_coco_rle(mask: np.ndarray) -> dict:
    rle = coco_mask.encode(np.asfortranarray(np.asarray(mask, np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def coco_rle_to_mask(rle: Mapping) -> np.ndarray:
    return coco_mask.decode({"size": list(rle["size"]),
                             "counts": str(rle["counts"]).encode("ascii")}).astype(bool)


def write_coco_masks(films: Iterable[tuple[ImageRecord, Mapping[str, np.ndarray]]],
                     classes: Sequence[MaskClassSpec]) -> str:
    """COCO JSON of ``films``: ``(image record, {class name: bool mask})`` pairs, taken
    one at a time (a lazy iterable keeps one film's masks in memory)."""
    cat_id = {c.name: c.index + 1 for c in classes}
    images, annotations = [], []
    for n, (rec, masks) in enumerate(films, start=1):
        images.append({"id": n, "file_name": rec.file_name, "width": rec.width,
                       "height": rec.height})
        for name, m in sorted(masks.items(), key=lambda kv: cat_id[kv[0]]):
            rle = mask_to_coco_rle(m)
            raw = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
            annotations.append({
                "id": len(annotations) + 1, "image_id": n, "category_id": cat_id[name],
                "segmentation": rle, "area": float(coco_mask.area(raw)),
                "bbox": [float(v) for v in coco_mask.toBbox(raw)], "iscrowd": 0,
            })
    categories = [{"id": cat_id[c.name], "name": c.name,
                   "supercategory": "anatomy" if c.anatomy else "finding"} for c in classes]
    return json.dumps({"images": images, "annotations": annotations,
                       "categories": categories}, indent=1)


def png_mask(mask: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", np.asarray(mask, np.uint8) * 255)
    if not ok:  # pragma: no cover - OpenCV encodes any 2-D uint8 array
        raise ValueError("could not encode a mask")
    return data.tobytes()
