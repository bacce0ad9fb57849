"""A PNG grid of generated images as a viewer would show them, with ground-truth boxes.

Useful to eyeball a generator change and for documentation.  Each tile is
displayed with the file's own VOI (first window or the VOI LUT) and
MONOCHROME1 files are inverted, so what you see is what a viewer shows.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from annotations.imaging.synthetic.generate import GenerationResult

_COLOURS = [(75, 25, 230), (75, 180, 60), (25, 225, 255), (216, 99, 67), (48, 130, 245),
            (180, 30, 145), (240, 240, 70)]


def display_image(ds: pydicom.Dataset) -> np.ndarray:
    """8-bit display of a radiograph: modality LUT, VOI, MONOCHROME1 inversion."""
    arr = apply_modality_lut(ds.pixel_array, ds)
    if "WindowCenter" in ds or "VOILUTSequence" in ds:
        arr = apply_voi_lut(arr if "VOILUTSequence" not in ds else ds.pixel_array, ds, index=0)
    arr = arr.astype(np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    out = (arr - lo) / max(hi - lo, 1e-9)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        out = 1.0 - out
    return np.round(out * 255).astype(np.uint8)


def contact_sheet(result: GenerationResult, path: Path, *, columns: int = 4, rows: int = 3,
                  tile: int = 360) -> Path:
    """Write a ``rows`` x ``columns`` grid of the first images of ``result`` to ``path``."""
    tiles = []
    for i, f in enumerate(result.files[: rows * columns]):
        ds = pydicom.dcmread(f)
        img = cv2.cvtColor(display_image(ds), cv2.COLOR_GRAY2BGR)
        scale = tile / max(img.shape[:2])
        img = cv2.resize(img, (int(img.shape[1] * scale), int(img.shape[0] * scale)),
                         interpolation=cv2.INTER_AREA)
        boxes = result.truth[i] if i < len(result.truth) else []
        for k, b in enumerate(boxes):
            c = _COLOURS[k % len(_COLOURS)]
            p0 = (int(b.x_min * scale), int(b.y_min * scale))
            p1 = (int(b.x_max * scale), int(b.y_max * scale))
            cv2.rectangle(img, p0, p1, c, 2)
            cv2.putText(img, b.class_name, (p0[0] + 2, max(12, p0[1] - 4)),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.4, c, 1, cv2.LINE_AA)
        label = f"{ds.Modality} {ds.PhotometricInterpretation[-1]} {ds.BitsStored}b"
        cv2.putText(img, label, (4, img.shape[0] - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (0, 255, 255), 1, cv2.LINE_AA)
        canvas = np.zeros((tile, tile, 3), np.uint8)
        canvas[: img.shape[0], : img.shape[1]] = img
        tiles.append(canvas)
    while len(tiles) < rows * columns:
        tiles.append(np.zeros((tile, tile, 3), np.uint8))
    grid = np.vstack([np.hstack(tiles[r * columns:(r + 1) * columns]) for r in range(rows)])
    path = Path(path)
    cv2.imwrite(str(path), grid)
    return path
