"""Agreement on image-level labels: between readers, and each reader against consensus.

* ``image_label_kappa``: per image-level class (findings and "No finding"), Fleiss'
  kappa of "did the reader pick it" over the images read, with the generalised
  formula for a varying number of readers (``agreement.fleiss_kappa``).
* ``label_set_agreement``: one number per image for adjudication routing, the mean
  over reader pairs of the Jaccard index of their image-level findings.
* ``image_label_vs_consensus``: per reader and class, the 2x2 table against the
  consensus labels over the images the reader read and the consensus decided, with
  sensitivity, specificity and Cohen's kappa (chance-corrected agreement of one reader
  with the consensus).

Pure module: numpy only.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from annotations.consensus.agreement import fleiss_kappa
from annotations.consensus.types import ConsensusResult, ImageReads
from annotations.taxonomy import NO_FINDING


def _ratio(num: float, den: float) -> float | None:
    return float(num) / float(den) if den else None


@dataclass(frozen=True)
class LabelKappa:
    label: str
    kappa: float | None  # None when undefined (everyone agreed on every image)
    n_images: int
    n_ratings: int
    positive_rate: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LabelVsConsensus:
    reader: str
    label: str
    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def sensitivity(self) -> float | None:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def specificity(self) -> float | None:
        return _ratio(self.tn, self.tn + self.fp)

    @property
    def kappa(self) -> float | None:
        """Cohen's kappa of the reader with the consensus; None when undefined."""
        n = self.tp + self.fp + self.fn + self.tn
        if not n:
            return None
        observed = (self.tp + self.tn) / n
        chance = ((self.tp + self.fp) * (self.tp + self.fn)
                  + (self.fn + self.tn) * (self.fp + self.tn)) / n**2
        return None if chance >= 1.0 else (observed - chance) / (1.0 - chance)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "sensitivity": self.sensitivity,
                "specificity": self.specificity, "kappa": self.kappa}


def _subset(images: Sequence[ImageReads], image_ids: Collection[str] | None):
    wanted = None if image_ids is None else set(image_ids)
    return [im for im in images if wanted is None or im.image_id in wanted]


def image_label_kappa(images: Sequence[ImageReads], labels: Sequence[str],
                      image_ids: Collection[str] | None = None) -> list[LabelKappa]:
    """Fleiss' kappa per label over the images (with at least two reads each)."""
    images = [im for im in _subset(images, image_ids) if im.reads]
    raters = np.array([len(im.reads) for im in images], dtype=np.float64)
    out = []
    for label in labels:
        yes = np.array([sum(label in r.image_labels for r in im.reads) for im in images],
                       dtype=np.float64)
        kappa, _, _ = fleiss_kappa(np.stack([yes, raters - yes], axis=1).reshape(-1, 2))
        usable = raters >= 2
        out.append(LabelKappa(label, kappa, int(usable.sum()), int(raters[usable].sum()),
                              _ratio(yes.sum(), raters.sum())))
    return out


def image_label_vs_consensus(
    images: Sequence[ImageReads], consensus: Mapping[str, ConsensusResult],
    labels: Sequence[str], image_ids: Collection[str] | None = None,
) -> list[LabelVsConsensus]:
    """Each reader's picks against the consensus labels, per label."""
    table: dict[tuple[str, str], list[int]] = {}
    for im in _subset(images, image_ids):
        res = consensus.get(im.image_id)
        if res is None or res.meta.get("undecided"):
            continue
        for read in im.reads:
            for label in labels:
                truth, said = label in res.image_labels, label in read.image_labels
                cell = table.setdefault((read.reader, label), [0, 0, 0, 0])
                cell[(0 if said else 2) + (0 if truth == said else 1)] += 1
    # cells: 0 picked and in the consensus (tp), 1 picked only (fp), 2 neither (tn),
    # 3 in the consensus only (fn)
    return [LabelVsConsensus(reader, label, c[0], c[1], c[3], c[2])
            for (reader, label), c in sorted(table.items())]


def label_set_agreement(image: ImageReads) -> float | None:
    """Mean over reader pairs of the Jaccard index of their image-level findings ("No
    finding" left out: boxes speak for it); two readers who picked none agree fully.
    None with fewer than two readers."""
    sets = [r.image_labels - {NO_FINDING} for r in image.reads]
    if len(sets) < 2:
        return None
    scores = [len(a & b) / len(a | b) if a | b else 1.0
              for i, a in enumerate(sets) for b in sets[i + 1:]]
    return float(np.mean(scores))
