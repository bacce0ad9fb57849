"""Finding kinds, the per-image finding plan, and boxes measured from lesion masks.

Both anatomies (procedural phantom and projected CT) render a lesion as a
pixel mask in the final image grid; the ground-truth box is the tight box of
that mask, so it is exact by construction rather than guessed from
parameters.  Boxes use VinBigData conventions: pixel coordinates of the
original image, ``x`` along columns, ``x_max``/``y_max`` are the far pixel
edges (last index + 1), so a one-pixel lesion at column 7 spans 7.0..8.0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from annotations.geometry import paired_iou
from annotations.taxonomy import NO_FINDING, VINDR_CXR_CLASSES

NODULE = "Nodule/Mass"
CARDIOMEGALY = "Cardiomegaly"
EFFUSION = "Pleural effusion"
CONSOLIDATION = "Consolidation"
PNEUMOTHORAX = "Pneumothorax"
AORTIC = "Aortic enlargement"

#: The lesion kinds both anatomies can render.
LESION_KINDS: tuple[str, ...] = (NODULE, CARDIOMEGALY, EFFUSION, CONSOLIDATION, PNEUMOTHORAX,
                                 AORTIC)
#: "No finding" follows the 14 box classes in the VinDr-CXR taxonomy (class id 14).
NO_FINDING_ID = len(VINDR_CXR_CLASSES)


def class_id(name: str) -> int:
    """VinDr-CXR class id of ``name`` (14 for "No finding")."""
    if name == NO_FINDING:
        return NO_FINDING_ID
    return VINDR_CXR_CLASSES.index(name)


@dataclass(frozen=True)
class Box:
    """One labelled box in image pixel coordinates (edges, floats as in VinBigData)."""

    class_name: str
    x_min: float
    y_min: float
    x_max: float
    y_max: float

    @property
    def class_id(self) -> int:
        return class_id(self.class_name)

    @property
    def width(self) -> float:
        return self.x_max - self.x_min

    @property
    def height(self) -> float:
        return self.y_max - self.y_min

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        return (self.x_min, self.y_min, self.x_max, self.y_max)

    def iou(self, other: Box) -> float:
        """IoU by the platform's one rule (:mod:`annotations.geometry`)."""
        return float(paired_iou([self.xyxy], [other.xyxy])[0])


def mask_box(class_name: str, mask: np.ndarray) -> Box | None:
    """Tight box around the true pixels of ``mask``; None when the mask is empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return Box(class_name, float(cols[0]), float(rows[0]), float(cols[-1] + 1),
               float(rows[-1] + 1))


def plan_findings(n: int, rng: np.random.Generator) -> list[list[str]]:
    """Finding kinds for ``n`` images.

    Every kind (and "no finding") appears once per shuffled cycle, so even a
    handful of images covers all classes; about a third of the lesion images
    get a second, different kind, and a few nodule images carry two nodules.
    An empty list means "No finding".
    """
    cycle = [NO_FINDING, NO_FINDING, *LESION_KINDS]
    plan: list[list[str]] = []
    deck: list[str] = []
    for _ in range(n):
        if not deck:
            deck = [cycle[j] for j in rng.permutation(len(cycle))]
        primary = deck.pop()
        if primary == NO_FINDING:
            plan.append([])
            continue
        kinds = [primary]
        if rng.random() < 0.35:
            others = [k for k in LESION_KINDS if k != primary]
            kinds.append(others[int(rng.integers(len(others)))])
        if primary == NODULE and rng.random() < 0.3:
            kinds.append(NODULE)
        plan.append(kinds)
    return plan
