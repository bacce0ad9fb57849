"""Render stored radiograph values into display pixels (pure numpy + OpenCV).

The pipeline follows the DICOM grayscale standard display chain, in order:

1. Modality LUT: ``RescaleSlope`` / ``RescaleIntercept`` (or a Modality LUT
   Sequence) turn stored values into modality values;
2. VOI LUT: the VOI LUT Sequence when present (preferred, as pydicom does), else
   the first Window Center/Width pair with its VOI LUT Function (LINEAR,
   LINEAR_EXACT, SIGMOID), else a robust percentile window over the image;
3. Presentation: MONOCHROME1 (and Presentation LUT Shape INVERSE) is inverted
   so that bone is always bright on screen;
4. optional CLAHE on the 8-bit image, then an area-averaged downscale.

The output of steps 1-3 is float in [0, 1]; ``to_uint8`` rounds it.  Original
width and height never change here: boxes stay in original pixels and the
display scale is recorded by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class VoiSpec:
    """Everything about a file needed to map stored values to display values."""

    photometric: str = "MONOCHROME2"
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0
    modality_lut: tuple[tuple[int, int, int], np.ndarray] | None = None
    voi_lut: tuple[tuple[int, int, int], np.ndarray] | None = None
    window_center: float | None = None
    window_width: float | None = None
    voi_function: str = "LINEAR"
    presentation_inverse: bool = False


def apply_lut(values: np.ndarray, descriptor: tuple[int, int, int], data: np.ndarray) -> np.ndarray:
    """Look up ``values`` in a DICOM LUT; out-of-range inputs clamp to the ends."""
    entries, first, _bits = descriptor
    entries = entries or 65536  # PS3.3 C.11.1.1: 0 means 2**16 entries
    lut = np.asarray(data)[:entries]
    idx = np.clip(np.rint(values).astype(np.int64) - int(first), 0, len(lut) - 1)
    return lut[idx]


def modality_values(stored: np.ndarray, spec: VoiSpec) -> np.ndarray:
    if spec.modality_lut is not None:
        return apply_lut(stored, *spec.modality_lut).astype(np.float64)
    out = stored.astype(np.float64)
    if spec.rescale_slope != 1.0 or spec.rescale_intercept != 0.0:
        out = out * spec.rescale_slope + spec.rescale_intercept
    return out


def window(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """VOI windowing per PS3.3 C.11.2.1.2 with output in [0, 1]."""
    function = (function or "LINEAR").upper()
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "LINEAR_EXACT":
        if width <= 0:
            raise ValueError("window width must be > 0")
        return np.clip((values - center) / width + 0.5, 0.0, 1.0)
    if width < 1:
        raise ValueError("window width must be >= 1 for LINEAR")
    if width == 1:
        return (values > center - 0.5).astype(np.float64)
    out = ((values - (center - 0.5)) / (width - 1.0)) + 0.5
    return np.clip(out, 0.0, 1.0)


def auto_window(values: np.ndarray, low_pct: float = 0.5, high_pct: float = 99.5) -> np.ndarray:
    """Percentile window for files that carry no VOI information."""
    lo, hi = np.percentile(values, [low_pct, high_pct])
    if hi <= lo:
        hi = lo + 1.0
    return np.clip((values - lo) / (hi - lo), 0.0, 1.0)


def to_unit(stored: np.ndarray, spec: VoiSpec,
            auto_range: tuple[float, float] | None = None) -> np.ndarray:
    """Stored values -> presentation values in [0, 1], bone bright.

    ``auto_range`` fixes the percentile window (computed over the whole image)
    when ``stored`` is only the list of distinct values (see ``to_display8``).
    """
    values = modality_values(stored, spec)
    if spec.voi_lut is not None:
        descriptor, data = spec.voi_lut
        bits = descriptor[2] or 16
        out = apply_lut(values, descriptor, data).astype(np.float64) / float(2**bits - 1)
        out = np.clip(out, 0.0, 1.0)
    elif spec.window_center is not None and spec.window_width is not None:
        out = window(values, spec.window_center, spec.window_width, spec.voi_function)
    elif auto_range is not None:
        lo, hi = auto_range
        out = np.clip((values - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    else:
        out = auto_window(values)
    if (spec.photometric == "MONOCHROME1") != spec.presentation_inverse:
        out = 1.0 - out
    return out


def to_uint8(unit: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(unit, 0.0, 1.0) * 255.0).astype(np.uint8)


#: Integer images whose value range is at most this wide go through a lookup table.
_LUT_MAX_RANGE = 1 << 17


def to_display8(stored: np.ndarray, spec: VoiSpec) -> np.ndarray:
    """Stored values -> 8-bit display values, bone bright.

    Integer images (every real radiograph) are rendered through a lookup table:
    the display chain is evaluated once per distinct stored value and the image
    is then one indexing pass, which is exact (the same formula per value) and
    several times faster than float arithmetic over 5 million pixels.
    """
    if stored.dtype.kind not in "iu":
        return to_uint8(to_unit(stored, spec))
    lo, hi = int(stored.min()), int(stored.max())
    if hi - lo > _LUT_MAX_RANGE:
        return to_uint8(to_unit(stored, spec))
    offset = stored if lo == 0 and stored.dtype.kind == "u" else stored.astype(np.int64) - lo
    domain = np.arange(lo, hi + 1, dtype=np.int64)
    auto_range = None
    if spec.voi_lut is None and (spec.window_center is None or spec.window_width is None):
        counts = np.bincount(offset.ravel(), minlength=hi - lo + 1)
        modality = modality_values(domain, spec)
        auto_range = _weighted_percentiles(modality, counts, (0.5, 99.5))
    lut = to_uint8(to_unit(domain, spec, auto_range))
    return lut[offset]


def _weighted_percentiles(values: np.ndarray, counts: np.ndarray,
                          pcts: tuple[float, float]) -> tuple[float, float]:
    """Percentiles of an image given its histogram (values sorted by stored value).

    Uses the 'lower' definition (an actual pixel value), which a display window
    cannot tell apart from interpolated percentiles.
    """
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(counts[order])
    total = cum[-1]
    out = []
    for p in pcts:
        rank = int(np.floor(p / 100.0 * (total - 1)))
        out.append(float(values[order][np.searchsorted(cum, rank + 1)]))
    lo, hi = out
    return (lo, hi if hi > lo else lo + 1.0)


def clahe(img8: np.ndarray, clip_limit: float = 2.0, tiles: int = 8) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation (optional per project)."""
    return cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tiles, tiles)).apply(img8)


def resize_long_side(img: np.ndarray, long_side: int) -> np.ndarray:
    """Downscale so the longer side is ``long_side``; never upscale."""
    h, w = img.shape[:2]
    scale = long_side / max(h, w)
    if scale >= 1.0:
        return img
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


@dataclass(frozen=True)
class Rendered:
    display: np.ndarray
    thumbnail: np.ndarray


def render(
    stored: np.ndarray,
    spec: VoiSpec,
    *,
    long_side: int = 1024,
    thumbnail_side: int = 256,
    use_clahe: bool = False,
) -> Rendered:
    img8 = to_display8(stored, spec)
    if use_clahe:
        img8 = clahe(img8)
    display = resize_long_side(img8, long_side)
    thumb = resize_long_side(display, thumbnail_side)
    return Rendered(display=np.ascontiguousarray(display), thumbnail=np.ascontiguousarray(thumb))


def encode_png(img8: np.ndarray, compression: int = 1) -> bytes:
    """PNG bytes; low zlib level because ingest throughput matters more than bytes."""
    ok, buf = cv2.imencode(".png", img8, [cv2.IMWRITE_PNG_COMPRESSION, compression])
    if not ok:  # pragma: no cover - OpenCV only fails on invalid arrays
        raise ValueError("PNG encoding failed")
    return buf.tobytes()
