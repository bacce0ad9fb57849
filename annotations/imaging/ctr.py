"""The cardiothoracic ratio measured from heart and lung-field masks.

CTR = maximal transverse cardiac diameter / maximal internal thoracic diameter, on a PA
film.  From masks (the usual automated definition): the cardiac diameter is the heart's
full horizontal extent (its rightmost minus its leftmost column, wherever on the heart they
lie); the thoracic diameter is the widest row of the two lung fields together, from the
outer edge of one to the outer edge of the other.  Both are returned as lines to draw: the
cardiac one at the row where the heart is widest within one row, spanning the full extent.
A ratio above 0.5 on a PA film is the classic sign of cardiomegaly.

Each mask is first reduced to its largest connected part and opened with a disc of 1% of
the film's width: the ratio is a property of the silhouettes, and a brush's stray speck or
a one-pixel spur at the extreme column (where a maximum is taken) would otherwise move it
by several hundredths.

Pure module: numpy and OpenCV.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from annotations.errors import DomainError

#: The classic cardiomegaly threshold on a PA film.
DEFAULT_CARDIOMEGALY_THRESHOLD = 0.5


@dataclass(frozen=True)
class Line:
    """A horizontal segment in pixels: row ``y``, from column ``x0`` to ``x1`` (inclusive
    pixel centres, so its length in pixels is ``x1 - x0 + 1``)."""

    y: int
    x0: int
    x1: int

    @property
    def length(self) -> int:
        return self.x1 - self.x0 + 1

    def as_dict(self) -> dict[str, int]:
        return {"y": self.y, "x0": self.x0, "x1": self.x1}


@dataclass(frozen=True)
class Ctr:
    ratio: float
    cardiac: Line
    thoracic: Line

    def as_dict(self) -> dict[str, object]:
        return {"ratio": self.ratio, "cardiac": self.cardiac.as_dict(),
                "thoracic": self.thoracic.as_dict()}


def cardiothoracic_ratio(heart: np.ndarray, right_lung: np.ndarray, left_lung: np.ndarray
                         ) -> Ctr:
    """The ratio and its two lines; ``DomainError("unmeasurable")`` when a structure is
    missing (nothing to measure is not a ratio of 0)."""
    heart, right, left = (np.asarray(m, bool) for m in (heart, right_lung, left_lung))
    if not heart.shape == right.shape == left.shape or heart.ndim != 2:
        raise DomainError("invalid_mask", "heart and lung masks differ in shape")
    heart, right, left = (silhouette(m) for m in (heart, right, left))
    if not heart.any() or not right.any() or not left.any():
        raise DomainError("unmeasurable", "the CTR needs the heart and both lung fields")
    lungs = right | left
    cols = np.flatnonzero(heart.any(axis=0))
    row_widths = _row_extent(heart)
    cardiac_row = int(np.argmax(row_widths))
    cardiac = Line(cardiac_row, int(cols[0]), int(cols[-1]))
    lung_widths = _row_extent(lungs)
    thoracic_row = int(np.argmax(lung_widths))
    lung_cols = np.flatnonzero(lungs[thoracic_row])
    thoracic = Line(thoracic_row, int(lung_cols[0]), int(lung_cols[-1]))
    return Ctr(ratio=cardiac.length / thoracic.length, cardiac=cardiac, thoracic=thoracic)


def silhouette(mask: np.ndarray) -> np.ndarray:
    """The mask's largest connected part, opened with a disc of 1% of its width."""
    m = np.asarray(mask, bool).astype(np.uint8)
    n, labels, st, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    if n <= 1:
        return np.zeros(m.shape, bool)
    m = (labels == 1 + int(np.argmax(st[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
    r = max(1, round(0.01 * m.shape[1]))
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return cv2.morphologyEx(m, cv2.MORPH_OPEN, disc).astype(bool)


def _row_extent(mask: np.ndarray) -> np.ndarray:
    """Per row, rightmost minus leftmost set column + 1 (0 for an empty row)."""
    any_row = mask.any(axis=1)
    first = np.argmax(mask, axis=1)
    last = mask.shape[1] - 1 - np.argmax(mask[:, ::-1], axis=1)
    return np.where(any_row, last - first + 1, 0)
