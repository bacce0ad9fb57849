"""Plain data carried in and out of the consensus engine (numpy in, numpy out).

Readers give no confidences: a read is a set of boxes with classes, plus
image-level labels.  A reader who says "No finding" has zero boxes and
``NO_FINDING`` in ``image_labels``; a reader who is absent from
``ImageReads.reads`` did not read the image (that distinction matters for
quorums, absent-model-aware confidences and reliability estimation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from annotations.errors import DomainError


def _as_boxes(boxes: Any) -> np.ndarray:
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return arr if arr.shape == (0, 4) else np.zeros((0, 4), dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise DomainError("invalid_reads", f"boxes must have shape (n, 4), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise DomainError("invalid_reads", "box coordinates must be finite")
    return arr


@dataclass(frozen=True, eq=False)
class ReaderRead:
    """One reader's read of one image: boxes (x_min, y_min, x_max, y_max, pixels)."""

    reader: str
    boxes: np.ndarray
    classes: np.ndarray
    image_labels: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        boxes = _as_boxes(self.boxes)
        classes = np.asarray(self.classes, dtype=np.int64).reshape(-1)
        if len(classes) != len(boxes):
            raise DomainError(
                "invalid_reads",
                f"reader {self.reader!r}: {len(boxes)} boxes but {len(classes)} classes",
            )
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "classes", classes)
        object.__setattr__(self, "image_labels", frozenset(self.image_labels))


@dataclass(frozen=True, eq=False)
class ImageReads:
    """All reads of one image; ``width``/``height`` in pixels when known."""

    image_id: str
    width: float | None
    height: float | None
    reads: list[ReaderRead] = field(default_factory=list)

    def __post_init__(self) -> None:
        seen = [r.reader for r in self.reads]
        if len(set(seen)) != len(seen):
            raise DomainError(
                "invalid_reads", f"image {self.image_id!r}: a reader appears twice", detail=seen
            )


@dataclass(eq=False, slots=True)
class ConsensusResult:
    """Consensus of one image.

    ``support[i]`` lists (sorted) the readers whose boxes formed box ``i``;
    ``scores`` mean what the strategy says (fused confidence, support
    fraction, posterior).  ``meta`` holds strategy-specific JSON-able facts.
    """

    boxes: np.ndarray
    classes: np.ndarray
    scores: np.ndarray
    support: list[tuple[str, ...]]
    image_labels: frozenset[str]
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (lists and plain numbers)."""
        return {
            "boxes": self.boxes.tolist(),
            "classes": [int(c) for c in self.classes],
            "scores": [float(s) for s in self.scores],
            "support": [list(s) for s in self.support],
            "image_labels": sorted(self.image_labels),
            "meta": self.meta,
        }

    def same_as(self, other: ConsensusResult) -> bool:
        """Bit-for-bit equality (used by determinism checks)."""
        return (
            np.array_equal(self.boxes, other.boxes)
            and np.array_equal(self.classes, other.classes)
            and np.array_equal(self.scores, other.scores)
            and self.support == other.support
            and self.image_labels == other.image_labels
            and self.meta == other.meta
        )


def empty_result(
    image_labels: frozenset[str], meta: dict[str, Any] | None = None
) -> ConsensusResult:
    return ConsensusResult(
        boxes=np.zeros((0, 4)),
        classes=np.zeros(0, dtype=np.int64),
        scores=np.zeros(0),
        support=[],
        image_labels=image_labels,
        meta=dict(meta or {}),
    )
