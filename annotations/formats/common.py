"""Helpers shared by the format modules: box checks, taxonomy lookups.

Every importer is strict and all-or-nothing: problems are collected in the
platform's one error list (``annotations.errors.Problems``: located, bounded)
and raised together as one ``DomainError`` so a user can fix a file in one pass,
and nothing is returned partially because a half-imported read set would bias any
consensus built on it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any

from annotations.errors import DomainError
from annotations.taxonomy import LabelClassSpec

#: Boxes may overhang the image by this many pixels (rounding in other tools);
#: they are clipped to the image.  Anything further out is an error.
EDGE_TOLERANCE_PX = 1.0


def file_stem(file_name: str) -> str:
    """Name of a file without folders or suffix, for Windows or POSIX paths alike."""
    return PurePosixPath(file_name.replace("\\", "/")).stem


def is_number(value: Any) -> bool:
    """True for finite ints/floats (JSON numbers), never for bools or strings."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def check_box(
    box: Sequence[float],
    width: float | None,
    height: float | None,
    tolerance: float = EDGE_TOLERANCE_PX,
) -> list[float] | str:
    """Validate an internal box (x_min, y_min, x_max, y_max); return it clipped, or an error.

    Zero-size and inverted boxes are rejected (they cannot be trained on and
    usually mean swapped columns); a box overhanging the image by at most
    ``tolerance`` pixels is clipped, further out is an error because it means
    the coordinates belong to another image size.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        return "coordinates must be finite"
    if x2 <= x1 or y2 <= y1:
        return f"box has zero or negative size ({x1:g}, {y1:g}, {x2:g}, {y2:g})"
    if min(x1, y1) < -tolerance:
        return f"box starts outside the image ({x1:g}, {y1:g})"
    x1, y1 = max(x1, 0.0), max(y1, 0.0)
    if width is not None:
        if x2 > width + tolerance or x1 >= width:
            return f"box x range {x1:g}..{x2:g} is outside the image width {width:g}"
        x2 = min(x2, float(width))
    if height is not None:
        if y2 > height + tolerance or y1 >= height:
            return f"box y range {y1:g}..{y2:g} is outside the image height {height:g}"
        y2 = min(y2, float(height))
    return [x1, y1, x2, y2]


def box_classes(taxonomy: Sequence[LabelClassSpec]) -> list[LabelClassSpec]:
    """The taxonomy's box classes (not image-level), sorted by ``class_id``."""
    specs = sorted((s for s in taxonomy if not s.image_level), key=lambda s: s.class_id)
    ids = [s.class_id for s in specs]
    names = [s.name for s in specs]
    if len(set(ids)) != len(ids) or len(set(names)) != len(names):
        raise DomainError("invalid_taxonomy", "box class ids and names must be unique")
    return specs


def class_ids_by_name(taxonomy: Sequence[LabelClassSpec]) -> dict[str, int]:
    """Box class name -> class id (names are how foreign files identify classes)."""
    return {s.name: s.class_id for s in box_classes(taxonomy)}


def lookup_class(name: str, by_name: Mapping[str, int]) -> int | str:
    """Class id of ``name`` (surrounding blanks ignored), or an error message."""
    cid = by_name.get(name.strip())
    if cid is None:
        return f"unknown class {name!r} (expected one of {sorted(by_name)})"
    return cid
