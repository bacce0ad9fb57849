"""Simulated radiologists: misses, false positives and box jitter per reader.

VinBigData-style data has each image read by three of many readers who
disagree in characteristic ways.  A ``ReaderProfile`` fixes one reader's
habits; reading an image applies them to the ground truth with the
reader's own random stream, so consensus and agreement code can be tested
against a known truth and known reader quality.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from annotations.errors import DomainError
from annotations.imaging.synthetic.lesions import Box

#: Classes a reader may draw where nothing is (common over-calls first).
FALSE_POSITIVE_CLASSES = ("Nodule/Mass", "Lung Opacity", "Pleural thickening", "Consolidation",
                          "Aortic enlargement", "Pleural effusion", "Cardiomegaly",
                          "Pneumothorax", "Other lesion")


@dataclass(frozen=True)
class ReaderProfile:
    """One reader's habits.

    ``miss_rate``: probability of not drawing a true finding; ``fp_rate``:
    expected number of false-positive boxes per image (Poisson); ``jitter``:
    standard deviation of each box edge as a fraction of the box size.
    """

    code: str
    miss_rate: float
    fp_rate: float
    jitter: float

    def __post_init__(self) -> None:
        if not self.code:
            raise DomainError("invalid_argument", "reader code must not be empty")
        if not 0.0 <= self.miss_rate <= 1.0 or self.fp_rate < 0 or self.jitter < 0:
            raise DomainError("invalid_argument", f"invalid reader profile {self!r}")


def default_profiles(n: int, seed: int) -> list[ReaderProfile]:
    """``n`` readers R1..Rn with habits that differ, reproducibly for a seed."""
    if n < 1:
        raise DomainError("invalid_argument", "need at least one reader")
    rng = np.random.default_rng([seed, 0x5EAD])
    return [
        ReaderProfile(
            code=f"R{i + 1}",
            miss_rate=round(float(rng.uniform(0.05, 0.35)), 3),
            fp_rate=round(float(rng.uniform(0.02, 0.4)), 3),
            jitter=round(float(rng.uniform(0.02, 0.12)), 3),
        )
        for i in range(n)
    ]


def assign_readers(n_images: int, n_readers: int, k: int, seed: int) -> list[list[int]]:
    """Indices of the ``k`` readers of each image: random, balanced over the readers."""
    if not 1 <= k <= n_readers:
        raise DomainError("invalid_argument",
                          f"readers_per_image must be within 1..{n_readers}, got {k}")
    rng = np.random.default_rng([seed, 0xA551])
    load = np.zeros(n_readers)
    out = []
    for _ in range(n_images):
        # Least-loaded readers first, ties broken at random.
        order = np.lexsort((rng.random(n_readers), load))
        chosen = sorted(int(i) for i in order[:k])
        load[chosen] += 1
        out.append(chosen)
    return out


def _jitter(box: Box, rng: np.random.Generator, jitter: float, rows: int, cols: int) -> Box:
    w, h = box.width, box.height
    dx0, dx1 = rng.normal(0.0, jitter * w, 2)
    dy0, dy1 = rng.normal(0.0, jitter * h, 2)
    x0 = float(np.clip(round(box.x_min + dx0), 0, cols - 1))
    y0 = float(np.clip(round(box.y_min + dy0), 0, rows - 1))
    x1 = float(np.clip(round(box.x_max + dx1), x0 + 1, cols))
    y1 = float(np.clip(round(box.y_max + dy1), y0 + 1, rows))
    return Box(box.class_name, x0, y0, x1, y1)


def read_image(profile: ReaderProfile, truth: list[Box], rows: int, cols: int,
               rng: np.random.Generator) -> list[Box]:
    """The boxes ``profile`` draws on an image with ground truth ``truth``.

    False positives use a class absent from the truth and land in the central
    (thoracic) part of the image, where a reader would look.
    """
    out = [_jitter(b, rng, profile.jitter, rows, cols) for b in truth
           if rng.random() >= profile.miss_rate]
    present = {b.class_name for b in truth}
    pool = [c for c in FALSE_POSITIVE_CLASSES if c not in present]
    for _ in range(int(rng.poisson(profile.fp_rate))):
        name = pool[int(rng.integers(len(pool)))]
        bw = cols * rng.uniform(0.05, 0.25)
        bh = rows * rng.uniform(0.05, 0.25)
        x0 = rng.uniform(0.15 * cols, 0.85 * cols - bw)
        y0 = rng.uniform(0.1 * rows, 0.8 * rows - bh)
        out.append(Box(name, float(round(x0)), float(round(y0)), float(round(x0 + bw)),
                       float(round(y0 + bh))))
    return out


def simulate_readers(truth: list[list[Box]], shapes: list[tuple[int, int]],
                     profiles: list[ReaderProfile], readers_per_image: int,
                     seed: int) -> list[list[tuple[str, list[Box]]]]:
    """Per image, ``(reader code, boxes)`` for each of its assigned readers."""
    if len(truth) != len(shapes):
        raise DomainError("invalid_argument", "truth and shapes differ in length")
    assignment = assign_readers(len(truth), len(profiles), readers_per_image, seed)
    out = []
    for i, (boxes, (rows, cols), chosen) in enumerate(zip(truth, shapes, assignment,
                                                          strict=True)):
        reads = []
        for r in chosen:
            rng = np.random.default_rng([seed, i, 0x12EAD, r])
            reads.append((profiles[r].code, read_image(profiles[r], boxes, rows, cols, rng)))
        out.append(reads)
    return out
