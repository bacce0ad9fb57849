"""Register COCO exports as Detectron2 datasets, "No finding" images included.

``register_coco_dataset(name, json, image_root)`` puts a lazy loader into
``DatasetCatalog`` and the class names into ``MetadataCatalog`` under
``name``, Detectron2's way of naming training and test sets in a config
(``cfg.DATASETS.TRAIN = ("cxr_train",)``).

We read the JSON ourselves instead of using ``load_coco_json`` because we need
two things it does not give: every image is kept even without annotations
(negatives; the config also sets ``DATALOADER.FILTER_EMPTY_ANNOTATIONS =
False`` so Detectron2 does not drop them later), and our ``image_key``
extension travels with each record.  Category ids map to contiguous model
class indices in sorted-id order, which for the platform's exports
(``id = class_id + 1``, all box classes listed) is exactly ``class_id``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import training.compat  # noqa: F401  (patches libraries before detectron2 loads)

# isort: split
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from annotations.errors import DomainError


def load_coco_dicts(coco_json_path: str | Path, image_root: str | Path) -> list[dict[str, Any]]:
    """Detectron2 dataset dicts for every image of a COCO file, boxes or not."""
    doc = json.loads(Path(coco_json_path).read_text())
    id_map = _category_map(doc)
    by_image: dict[Any, list[dict[str, Any]]] = {}
    for ann in doc.get("annotations", []):
        if ann.get("iscrowd", 0):
            continue
        record = {
            "bbox": [float(v) for v in ann["bbox"]],
            "bbox_mode": BoxMode.XYWH_ABS,
            "category_id": id_map[ann["category_id"]],
            "iscrowd": 0,
        }
        if isinstance(ann.get("score"), int | float) and math.isfinite(ann["score"]):
            # a consensus box's certainty; soft-label training reads it (0..1)
            record["weight"] = min(1.0, max(0.0, float(ann["score"])))
        by_image.setdefault(ann["image_id"], []).append(record)
    root = Path(image_root)
    return [
        {
            "file_name": str(root / im["file_name"]),
            "image_id": im["id"],
            "image_key": im.get("image_key") or Path(im["file_name"]).stem,
            "height": int(im["height"]),
            "width": int(im["width"]),
            "annotations": by_image.get(im["id"], []),
        }
        for im in doc.get("images", [])
    ]


def _category_map(doc: dict[str, Any]) -> dict[Any, int]:
    ids = sorted(c["id"] for c in doc.get("categories", []))
    if not ids:
        raise DomainError("invalid_coco", "COCO file has no categories")
    return {cid: i for i, cid in enumerate(ids)}


def register_coco_dataset(
    name: str, coco_json_path: str | Path, image_root: str | Path, *, replace: bool = True
) -> None:
    """Register ``name`` in Detectron2's catalogs (loaded lazily, on first use).

    ``replace`` drops an earlier registration of the same name (a new export
    of a dataset between training runs in one process).
    """
    doc = json.loads(Path(coco_json_path).read_text())
    cats = sorted(doc.get("categories", []), key=lambda c: c["id"])
    if name in DatasetCatalog.list():
        if not replace:
            raise DomainError("conflict", f"dataset {name!r} is already registered")
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    json_path, root = str(coco_json_path), str(image_root)
    DatasetCatalog.register(name, lambda: load_coco_dicts(json_path, root))
    MetadataCatalog.get(name).set(
        thing_classes=[c["name"] for c in cats],
        thing_dataset_id_to_contiguous_id={c["id"]: i for i, c in enumerate(cats)},
        json_file=json_path,
        image_root=root,
        evaluator_type="coco",
    )
