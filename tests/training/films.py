"""Synthetic films for the ML tests: a bright square lesion on a noisy dark field."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

SIZE = 128
TRUTH = np.array([50.0, 40.0, 86.0, 76.0])  # x_min, y_min, x_max, y_max
CLASS_NAMES = ["Nodule/Mass", "Pleural effusion"]
LESION_CLASS = 1


def film(seed: int, lesion: bool = True) -> np.ndarray:
    """128x128 uint8 noise (a dark field) with a bright square lesion at ``TRUTH``."""
    rng = np.random.default_rng(seed)
    img = np.clip(rng.normal(60, 20, (SIZE, SIZE)), 1, 254).astype(np.uint8)
    if lesion:
        x1, y1, x2, y2 = TRUTH.astype(int)
        img[y1:y2, x1:x2] = 220
    img[0, 0], img[-1, -1] = 0, 255  # full range: the uint16 copy stretches to the same pixels
    return img


def iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def write_coco(root: Path) -> Path:
    """A COCO file in the platform's export layout: one lesion film, one "No finding" film."""
    cv2.imwrite(str(root / "lesion.png"), film(0))
    cv2.imwrite(str(root / "normal.png"), film(1, lesion=False))
    x1, y1, x2, y2 = TRUTH.tolist()
    doc = {
        "images": [
            {"id": 1, "file_name": "lesion.png", "width": SIZE, "height": SIZE,
             "image_key": "img-lesion"},
            {"id": 2, "file_name": "normal.png", "width": SIZE, "height": SIZE,
             "image_key": "img-normal", "image_labels": ["No finding"]},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": LESION_CLASS + 1,
             "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0},
        ],
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(CLASS_NAMES)],
    }
    path = root / "train.json"
    path.write_text(json.dumps(doc))
    return path
