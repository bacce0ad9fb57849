"""Mask consensus: several readers' masks of one structure on one image, merged.

Two strategies, registered by name like the box strategies (a project's consensus params
pick one with ``mask_method``; default ``staple``):

* ``staple``: SimpleITK's STAPLE (Warfield et al. 2004): EM over the readers' binary masks
  estimates each reader's sensitivity and specificity and a per-pixel probability of the
  true structure; consensus is probability >= ``mask_threshold`` (0.5).  A reader who
  leaks gets a low specificity and is outvoted where they alone paint; a careful reader
  counts for more than a sloppy one.
* ``majority``: a pixel is in when at least ``ceil(mask_quorum * k)`` of ``k`` readers
  painted it (``mask_quorum`` 0.5).  Sensitivity and specificity against that consensus
  are reported so the two strategies can be compared reader by reader.

STAPLE runs on the bounding box of every reader's mask plus a margin, not the whole film:
the far background, where all readers agree, would otherwise make every specificity
indistinguishable from 1 and the structure's prior vanishingly small.  A reader who
painted nothing of the structure takes part with an empty mask (a miss counts against
their sensitivity); an image where nobody painted it has an empty consensus.

Pure module: numpy and SimpleITK; no Django.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import SimpleITK as sitk

from annotations.errors import DomainError
from annotations.registry import Registry

#: Consensus params this module reads (the box strategies never see them).
KEYS = ("mask_method", "mask_threshold", "mask_quorum")
#: Pixels around the readers' union that STAPLE also sees (true negatives near the
#: boundary are what a specificity should be measured on).
ROI_MARGIN = 16


@dataclass(frozen=True)
class MaskConsensus:
    """The merged mask and what the method learnt about each reader."""

    mask: np.ndarray  # bool (H, W)
    method: str
    sensitivity: dict[str, float] = field(default_factory=dict)
    specificity: dict[str, float] = field(default_factory=dict)
    #: STAPLE's per-pixel probability (None for majority)
    probability: np.ndarray | None = None


class MaskStrategy(ABC):
    """Base class; ``merge`` takes ``{reader: bool mask}`` of one structure, same shape."""

    name: ClassVar[str] = ""

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        self.params = dict(params or {})

    @abstractmethod
    def merge(self, masks: Mapping[str, np.ndarray]) -> MaskConsensus:
        """Consensus of one structure on one image."""


_REGISTRY: Registry[MaskStrategy] = Registry("mask consensus strategy")
register = _REGISTRY.register
available = _REGISTRY.available


def build(params: Mapping[str, Any] | None = None) -> MaskStrategy:
    """The mask strategy named by ``params["mask_method"]`` (default ``staple``)."""
    params = {k: v for k, v in (params or {}).items() if k in KEYS}
    method = params.pop("mask_method", "staple")
    return _REGISTRY.build(method, params)


def _fraction(params: Mapping[str, Any], key: str, default: float) -> float:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not 0.0 < float(value) <= 1.0:
        raise DomainError("invalid_params", f"{key} must be a number in (0, 1]",
                          detail={key: value})
    return float(value)


def _stack(masks: Mapping[str, np.ndarray]) -> tuple[list[str], np.ndarray]:
    if not masks:
        raise DomainError("invalid_params", "mask consensus needs at least one reader")
    readers = sorted(masks)
    shapes = {np.asarray(masks[r]).shape for r in readers}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise DomainError("invalid_mask", f"readers' masks differ in shape: {sorted(shapes)}")
    return readers, np.stack([np.asarray(masks[r], dtype=bool) for r in readers])


def roi_bounds(union: np.ndarray, margin: int = ROI_MARGIN) -> tuple[slice, slice]:
    """The readers' union's bounding box plus ``margin``: where STAPLE measures readers."""
    rows, cols = np.flatnonzero(union.any(axis=1)), np.flatnonzero(union.any(axis=0))
    return (slice(max(0, rows[0] - margin), min(union.shape[0], rows[-1] + 1 + margin)),
            slice(max(0, cols[0] - margin), min(union.shape[1], cols[-1] + 1 + margin)))


def reader_rates(masks: Mapping[str, np.ndarray], truth: np.ndarray,
                 roi: tuple[slice, slice] | None = None
                 ) -> tuple[dict[str, float], dict[str, float]]:
    """Each reader's sensitivity and specificity against ``truth`` (within ``roi``)."""
    readers, stack = _stack(masks)
    truth = np.asarray(truth, bool)
    if roi is not None:
        stack, truth = stack[:, roi[0], roi[1]], truth[roi]
    return _rates(stack, truth, readers)


def _rates(stack: np.ndarray, truth: np.ndarray, readers: list[str]
           ) -> tuple[dict[str, float], dict[str, float]]:
    """Each reader's sensitivity and specificity against ``truth`` (NaN-free: an empty
    class counts as perfectly found)."""
    pos, neg = truth.sum(), (~truth).sum()
    sens, spec = {}, {}
    for r, m in zip(readers, stack, strict=True):
        sens[r] = float((m & truth).sum() / pos) if pos else 1.0
        spec[r] = float((~m & ~truth).sum() / neg) if neg else 1.0
    return sens, spec


@register("majority")
class Majority(MaskStrategy):
    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        super().__init__(params)
        unknown = set(self.params) - {"mask_quorum"}
        if unknown:
            raise DomainError("invalid_params", f"unknown mask params {sorted(unknown)}")
        self.quorum = _fraction(self.params, "mask_quorum", 0.5)

    def merge(self, masks: Mapping[str, np.ndarray]) -> MaskConsensus:
        readers, stack = _stack(masks)
        need = max(1, math.ceil(self.quorum * len(readers) - 1e-9))
        mask = stack.sum(axis=0) >= need
        sens, spec = _rates(stack, mask, readers)
        return MaskConsensus(mask=mask, method=self.name, sensitivity=sens, specificity=spec)


@register("staple")
class Staple(MaskStrategy):
    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        super().__init__(params)
        unknown = set(self.params) - {"mask_threshold"}
        if unknown:
            raise DomainError("invalid_params", f"unknown mask params {sorted(unknown)}")
        self.threshold = _fraction(self.params, "mask_threshold", 0.5)

    def merge(self, masks: Mapping[str, np.ndarray]) -> MaskConsensus:
        readers, stack = _stack(masks)
        union = stack.any(axis=0)
        full = np.zeros(union.shape, np.float32)
        if not union.any():
            return MaskConsensus(mask=union, method=self.name, probability=full,
                                 sensitivity={r: 1.0 for r in readers},
                                 specificity={r: 1.0 for r in readers})
        if len(readers) == 1:
            mask = stack[0].copy()
            return MaskConsensus(mask=mask, method=self.name, probability=mask.astype(np.float32),
                                 sensitivity={readers[0]: 1.0}, specificity={readers[0]: 1.0})
        roi = roi_bounds(union)
        images = [sitk.GetImageFromArray(m[roi].astype(np.uint8)) for m in stack]
        staple = sitk.STAPLEImageFilter()
        staple.SetForegroundValue(1.0)
        staple.SetMaximumIterations(200)
        prob = sitk.GetArrayFromImage(staple.Execute(images)).astype(np.float32)
        full[roi] = np.nan_to_num(prob, nan=0.0)
        sens = {r: float(v) for r, v in zip(readers, staple.GetSensitivity(), strict=True)}
        spec = {r: float(v) for r, v in zip(readers, staple.GetSpecificity(), strict=True)}
        return MaskConsensus(mask=full >= self.threshold, method=self.name, probability=full,
                             sensitivity=sens, specificity=spec)
