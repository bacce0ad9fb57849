"""Simulated readers drawing masks: boundary noise, a bias, misses and leaks.

A reader outlining a lung field wobbles around the true boundary (smooth, not pixel
noise: a hand follows a curve), may sit consistently inside or outside it (``bias_px``),
may skip a structure altogether (``miss_rate``) and may let the brush run over into the
neighbourhood (``leak_rate``: a blob of ``leak_size`` times the structure's equivalent
radius added at a random point of its boundary).  Each reader reads with their own random
stream, so consensus strategies can be measured against exact truth and known readers.

Pure module: numpy and OpenCV.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from annotations.errors import DomainError


@dataclass(frozen=True)
class MaskReaderProfile:
    """One reader's habits with a brush (lengths in pixels of the film being read)."""

    code: str
    boundary_px: float = 2.0
    bias_px: float = 0.0
    miss_rate: float = 0.0
    leak_rate: float = 0.0
    leak_size: float = 0.35

    def __post_init__(self) -> None:
        if not self.code or self.boundary_px < 0 or not 0 <= self.miss_rate <= 1 \
                or not 0 <= self.leak_rate <= 1 or self.leak_size <= 0:
            raise DomainError("invalid_argument", f"invalid mask reader profile {self!r}")


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """Distance to the boundary in pixels: positive inside, negative outside."""
    m = np.asarray(mask, bool).astype(np.uint8)
    inside = cv2.distanceTransform(m, cv2.DIST_L2, 5)
    outside = cv2.distanceTransform(1 - m, cv2.DIST_L2, 5)
    return inside - outside


def _smooth_noise(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A unit-variance random field smooth over ~6% of the film (a hand's wobble)."""
    sigma = max(2.0, 0.06 * max(shape))
    field = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), sigma)
    sd = float(field.std())
    return field / sd if sd > 0 else field


def draw_mask(truth: np.ndarray, profile: MaskReaderProfile, rng: np.random.Generator
              ) -> np.ndarray:
    """What a reader with ``profile`` paints for the structure ``truth`` (bool mask)."""
    truth = np.asarray(truth, bool)
    if not truth.any() or rng.random() < profile.miss_rate:
        return np.zeros_like(truth)
    level = signed_distance(truth) + profile.bias_px
    if profile.boundary_px > 0:
        level = level + profile.boundary_px * _smooth_noise(truth.shape, rng)
    out = level > 0
    if rng.random() < profile.leak_rate:
        out |= _leak(truth, profile.leak_size, rng)
    return out


def _leak(truth: np.ndarray, size: float, rng: np.random.Generator) -> np.ndarray:
    """A blob straddling a random boundary point, mostly outside the structure."""
    edge = truth & ~cv2.erode(truth.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    ys, xs = np.nonzero(edge)
    i = int(rng.integers(len(ys)))
    radius = size * float(np.sqrt(truth.sum() / np.pi))
    # push the centre outwards, along the distance gradient, so the blob lies outside
    sd = signed_distance(truth)
    gy, gx = np.gradient(sd)
    g = np.array([gx[ys[i], xs[i]], gy[ys[i], xs[i]]])
    g = g / (np.linalg.norm(g) + 1e-9)
    cx, cy = xs[i] - g[0] * radius * 0.6, ys[i] - g[1] * radius * 0.6
    blob = np.zeros(truth.shape, np.uint8)
    axes = (max(1, int(radius)), max(1, int(radius * float(rng.uniform(0.5, 1.0)))))
    cv2.ellipse(blob, (int(round(cx)), int(round(cy))), axes, float(rng.uniform(0, 180)),
                0, 360, 1, -1)
    return blob.astype(bool)


def read_masks(truth: dict[str, np.ndarray], profiles: list[MaskReaderProfile],
               rng: np.random.Generator) -> dict[str, dict[str, np.ndarray]]:
    """``{reader: {structure: mask}}`` for every reader, every structure of ``truth``."""
    return {p.code: {name: draw_mask(m, p, rng) for name, m in sorted(truth.items())}
            for p in profiles}
