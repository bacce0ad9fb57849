"""THE mapping between Label Studio mask regions and pixel masks.

Label Studio stores a brush stroke set (``brushlabels``) as its own run-length code of the
RGBA canvas, in the image's pixels, and a polygon (``polygonlabels``) as vertices in
PERCENT of the image size.  Decoding and encoding the brush code uses the converter that
Label Studio's SDK ships (``label_studio_sdk.converter.brush``), so the bytes we read are
the bytes the editor wrote; polygons are filled with OpenCV.

Contracts:

* ``rle_to_mask(mask_to_rle(m)) == m`` exactly (the code is lossless).
* Input is bounded BEFORE it is expanded: the code's header states how many values it
  holds, and that must equal ``4 x width x height`` of the region's stated size, which must
  itself be within ``MAX_MASK_PIXELS``; the code may not be longer than the canvas it
  describes could ever need.  Anything else is ``DomainError("invalid_region")``.
* Several regions of one class in one read are one mask (their union): readers paint a
  structure in as many strokes as they like.

Pure module: numpy, OpenCV, the SDK's converter; no Django.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np
from label_studio_sdk.converter import brush

from annotations.errors import DomainError
from annotations.label_studio.config import IMAGE_NAME, MASK_CONTROL
from annotations.label_studio.regions import new_region_id

BRUSH_TYPE = "brushlabels"
POLYGON_TYPE = "polygonlabels"
MASK_TYPES = frozenset({BRUSH_TYPE, POLYGON_TYPE})
#: A 4,096 x 4,096 film; a larger canvas is not a chest radiograph display derivative.
MAX_MASK_PIXELS = 4096 * 4096
#: Polygons with more vertices than this are not drawn by hand.
MAX_POLYGON_POINTS = 20_000
#: A painted structure's brush code: a hand-painted lung on a 4,096 px film is tens of
#: kilobytes (runs per row, not pixels); the SDK's decoder expands every byte into
#: eight Python strings, so a code is refused beyond this before it is decoded.
MAX_RLE_BYTES = 512 * 1024
#: Mask regions one read may hold (strokes of every class together).
MAX_MASK_REGIONS = 64


def mask_to_rle(mask: np.ndarray) -> list[int]:
    """A boolean (H, W) mask as Label Studio's brush code (foreground painted opaque)."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise DomainError("invalid_region", f"a mask is 2-D, got shape {m.shape}")
    return [int(v) for v in brush.mask2rle((m > 0).astype(np.uint8) * 255)]


def rle_to_mask(rle: Sequence[int], width: int, height: int) -> np.ndarray:
    """Label Studio's brush code of a ``width`` x ``height`` canvas as a boolean mask."""
    _check_canvas(width, height)
    if not isinstance(rle, (list, tuple)) or len(rle) < 5:
        raise DomainError("invalid_region", "a brush region needs its rle code")
    # Refuse before the SDK expands the code into a bit string: never longer than the
    # raw canvas could need (4 bytes a pixel plus the header), nor than a painted
    # structure's code is.
    if len(rle) > min(4 * width * height + 16, MAX_RLE_BYTES):
        raise DomainError("invalid_region", "brush code longer than its canvas allows")
    try:
        header = bytes(int(v) for v in rle[:4])
    except (TypeError, ValueError) as exc:
        raise DomainError("invalid_region", "brush code holds non-byte values") from exc
    values = int.from_bytes(header, "big")
    if values != 4 * width * height:
        raise DomainError("invalid_region", f"brush code holds {values} values, the "
                          f"{width}x{height} canvas needs {4 * width * height}")
    try:
        flat = brush.decode_rle(bytes(int(v) for v in rle))
    except (ValueError, IndexError) as exc:
        raise DomainError("invalid_region", "brush code is damaged") from exc
    if flat.size != 4 * width * height:
        raise DomainError("invalid_region", "brush code is damaged")
    # the alpha channel is the painted area (what the SDK's own exporter reads)
    return flat.reshape(height, width, 4)[:, :, 3] > 0


def polygon_to_mask(points: Sequence[Sequence[float]], width: int, height: int) -> np.ndarray:
    """A polygon's vertices in percent of the image as a filled boolean mask."""
    _check_canvas(width, height)
    if not isinstance(points, (list, tuple)) or not 3 <= len(points) <= MAX_POLYGON_POINTS:
        raise DomainError("invalid_region", f"a polygon needs 3..{MAX_POLYGON_POINTS} points")
    try:
        pts = np.array([[float(p[0]), float(p[1])] for p in points], dtype=np.float64)
    except (TypeError, ValueError, IndexError, KeyError) as exc:
        raise DomainError("invalid_region", "bad polygon points") from exc
    if not np.isfinite(pts).all() or (pts < -0.01).any() or (pts > 100.01).any():
        raise DomainError("invalid_region", "polygon points lie outside the image")
    px = np.clip(pts, 0.0, 100.0) / 100.0 * np.array([width, height])
    # vertex (x, y) in pixel-corner coordinates; pixel centres sit at +0.5
    out = np.zeros((height, width), np.uint8)
    cv2.fillPoly(out, [np.round(px - 0.5).astype(np.int32)], 1)
    return out.astype(bool)


def brush_region(mask: np.ndarray, label: str, *, score: float | None = None,
                 region_id: str | None = None, from_name: str = MASK_CONTROL,
                 to_name: str = IMAGE_NAME) -> dict[str, Any]:
    """One ``brushlabels`` result item (prediction or annotation) painting ``mask``."""
    height, width = np.asarray(mask).shape
    item: dict[str, Any] = {
        "id": region_id or new_region_id(),
        "from_name": from_name,
        "to_name": to_name,
        "type": BRUSH_TYPE,
        "original_width": int(width),
        "original_height": int(height),
        "image_rotation": 0,
        "value": {"format": "rle", "rle": mask_to_rle(mask), BRUSH_TYPE: [label]},
    }
    if score is not None:
        item["score"] = float(score)
    return item


def region_mask(item: Mapping[str, Any], allowed: set[str] | None,
                size: tuple[int, int] | None = None) -> tuple[str, np.ndarray]:
    """``(class name, boolean mask)`` of one brush or polygon item, at the region's size
    (``size``, when given, is the size every region of the result must have)."""
    kind = item.get("type")
    value = item.get("value") or {}
    if not isinstance(value, Mapping):
        raise DomainError("invalid_region", "a mask region's value is an object")
    names = value.get(kind) or []
    if len(names) != 1:
        raise DomainError("invalid_region", f"a mask needs exactly one label, got {names}")
    label = str(names[0])
    if allowed is not None and label not in allowed:
        raise DomainError("invalid_region", f"unknown mask label {label!r}",
                          detail={"unknown": label, "allowed": sorted(allowed)})
    try:
        width, height = int(item["original_width"]), int(item["original_height"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DomainError("invalid_region", "mask region has no original size") from exc
    if size is not None and (width, height) != size:
        raise DomainError("invalid_region", f"mask measured on a {(width, height)} image, "
                          f"expected {size}")
    try:
        turned = float(item.get("image_rotation") or 0.0) % 360.0
    except (TypeError, ValueError) as exc:
        raise DomainError("invalid_region", "bad image_rotation") from exc
    if min(turned, 360.0 - turned) > 1e-6:
        raise DomainError("invalid_region", "rotated images are not supported")
    if kind == BRUSH_TYPE:
        if value.get("format", "rle") != "rle":
            raise DomainError("invalid_region", f"brush format {value.get('format')!r}")
        return label, rle_to_mask(value.get("rle"), width, height)
    if kind == POLYGON_TYPE:
        return label, polygon_to_mask(value.get("points"), width, height)
    raise DomainError("invalid_region", f"not a mask region: {kind!r}")


def _check_canvas(width: int, height: int) -> None:
    if not (isinstance(width, int) and isinstance(height, int)) or width <= 0 or height <= 0:
        raise DomainError("invalid_region", f"bad mask size {width}x{height}")
    if width * height > MAX_MASK_PIXELS:
        raise DomainError("invalid_region", f"a {width}x{height} mask exceeds "
                          f"{MAX_MASK_PIXELS} pixels")
