"""Image-level findings ("effusion: yes/no" per image) merged across readers.

Readers pick image-level classes from the taxonomy (a multi-select); a reader who read
the image and did not pick a class said "no" to it.  Every box strategy hands its
results here, so every strategy decides image labels the same way, by one of two
methods (strategy params ``image_method`` and ``image_quorum``):

* ``majority``: a class is present when at least ``ceil(image_quorum * k)`` of the
  image's ``k`` readers picked it (``image_quorum`` default 0.5, as for boxes); its
  score is the fraction who did.
* ``reader_model``: per class, a two-coin Dawid-Skene model: each reader has a
  sensitivity and a specificity for the class, the class a prevalence; EM from the
  majority's answers gives every image a posterior that the finding is present (the
  score; present when >= 0.5) and every reader estimates with 95% intervals.  Beta
  priors of ``prior_strength`` pseudo-reads pull a reader with few reads towards the
  panel's values for that class, so a new reader neither dominates nor is ignored.
  The default method of the ``reader_model`` box strategy.

"No finding" then follows the boxes and the findings together: an image with no
consensus box and no image-level finding, read by someone, is "No finding"; any box or
finding removes it.  How many readers picked each class is kept in
``meta["image_votes"]``, and the scores in ``meta["image_scores"]``.

Own EM rather than a crowdsourcing library: the maintained Dawid-Skene implementation
(``crowd-kit``) pulls in ``transformers`` and has no priors for readers with few reads.
Pure module: numpy and scipy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from annotations.consensus.image_labels import consensus_image_labels
from annotations.consensus.params import ParamReader
from annotations.consensus.types import ConsensusResult, ImageReads
from annotations.taxonomy import NO_FINDING

METHODS = ("majority", "reader_model")
#: strategy params read here (and removed before the box strategy sees them)
KEYS = ("image_method", "image_quorum", "image_prior_strength")
_EPS = 1e-6


@dataclass(frozen=True)
class ImageRule:
    method: str = "majority"
    quorum: float = 0.5
    prior_strength: float = 4.0

    @classmethod
    def parse(cls, strategy: str, params: Mapping[str, Any], default_method: str) -> ImageRule:
        p = ParamReader(strategy, params)
        rule = cls(method=p.choice("image_method", default_method, METHODS),
                   quorum=p.number("image_quorum", 0.5, lo=1e-9, hi=1.0),
                   prior_strength=p.number("image_prior_strength", 4.0, lo=0.0, hi=1000.0))
        p.done()
        return rule


@dataclass
class ImageFindings:
    """Per image: the classes decided present, and per class the votes and score."""

    present: dict[str, frozenset[str]] = field(default_factory=dict)
    votes: dict[str, dict[str, int]] = field(default_factory=dict)
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    #: reader -> class -> estimates (``reader_model`` only)
    readers: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)


def finding_classes(images: Sequence[ImageReads]) -> list[str]:
    """Every image-level finding any reader picked, sorted ("No finding" is not one)."""
    return sorted({label for im in images for r in im.reads for label in r.image_labels}
                  - {NO_FINDING})


def _votes(images: Sequence[ImageReads], classes: list[str]):
    """(reads, classes) 0/1 matrix, plus the image and reader index of every read."""
    readers = sorted({r.reader for im in images for r in im.reads})
    col = {c: j for j, c in enumerate(classes)}
    rid = {code: j for j, code in enumerate(readers)}
    rows, image_of, reader_of = [], [], []
    for i, im in enumerate(images):
        for read in im.reads:
            row = np.zeros(len(classes), dtype=np.int8)
            for label in read.image_labels:
                if label in col:
                    row[col[label]] = 1
            rows.append(row)
            image_of.append(i)
            reader_of.append(rid[read.reader])
    y = np.array(rows, dtype=np.int8).reshape(len(rows), len(classes))
    return y, np.array(image_of, dtype=np.int64), np.array(reader_of, dtype=np.int64), readers


def decide(images: Sequence[ImageReads], rule: ImageRule) -> ImageFindings:
    """Image-level findings of every image under ``rule`` (deterministic)."""
    images = sorted(images, key=lambda im: im.image_id)
    classes = finding_classes(images)
    out = ImageFindings()
    if not classes:
        return out
    y, image_of, reader_of, readers = _votes(images, classes)
    n_images = len(images)
    k = np.bincount(image_of, minlength=n_images).astype(np.float64)
    votes = np.stack([np.bincount(image_of, weights=y[:, j], minlength=n_images)
                      for j in range(len(classes))], axis=1)
    if rule.method == "reader_model":
        score = np.zeros_like(votes)
        for j, name in enumerate(classes):
            fit = _dawid_skene(y[:, j], image_of, reader_of, n_images, len(readers),
                               votes[:, j] / np.maximum(k, 1.0), rule.prior_strength)
            score[:, j] = fit["posterior"]
            for r, code in enumerate(readers):
                out.readers.setdefault(code, {})[name] = fit["readers"][r]
        present = score >= 0.5
    else:
        need = np.maximum(np.ceil(k * rule.quorum - 1e-9), 1.0)
        score = votes / np.maximum(k, 1.0)[:, None]
        present = votes >= need[:, None]
    present &= (k > 0)[:, None]
    for i, im in enumerate(images):
        if k[i] == 0:
            continue
        out.present[im.image_id] = frozenset(c for j, c in enumerate(classes) if present[i, j])
        out.votes[im.image_id] = {c: int(votes[i, j]) for j, c in enumerate(classes)}
        out.scores[im.image_id] = {c: round(float(score[i, j]), 6)
                                   for j, c in enumerate(classes)}
    return out


def _dawid_skene(y: np.ndarray, image_of: np.ndarray, reader_of: np.ndarray, n_images: int,
                 n_readers: int, init: np.ndarray, m: float, max_iter: int = 200,
                 tol: float = 1e-7) -> dict[str, Any]:
    """Two-coin Dawid-Skene for one class, MAP with Beta priors around the panel."""
    post = np.clip(init, 0.0, 1.0)
    yf = y.astype(np.float64)
    for _ in range(max_iter):
        w = post[image_of]  # P(present) of each read's image
        tp = np.bincount(reader_of, weights=w * yf, minlength=n_readers)
        pos = np.bincount(reader_of, weights=w, minlength=n_readers)
        tn = np.bincount(reader_of, weights=(1 - w) * (1 - yf), minlength=n_readers)
        neg = np.bincount(reader_of, weights=1 - w, minlength=n_readers)
        panel_sens = (tp.sum() + 1.0) / (pos.sum() + 2.0)
        panel_spec = (tn.sum() + 1.0) / (neg.sum() + 2.0)
        sens = np.clip((tp + m * panel_sens) / (pos + m + _EPS), _EPS, 1 - _EPS)
        spec = np.clip((tn + m * panel_spec) / (neg + m + _EPS), _EPS, 1 - _EPS)
        prev = float(np.clip((post.sum() + 1.0) / (n_images + 2.0), _EPS, 1 - _EPS))
        s, p = sens[reader_of], spec[reader_of]
        llr = np.where(y == 1, np.log(s) - np.log(1 - p), np.log(1 - s) - np.log(p))
        logit = math.log(prev / (1 - prev)) + np.bincount(image_of, weights=llr,
                                                          minlength=n_images)
        new = 1.0 / (1.0 + np.exp(-logit))
        done = float(np.abs(new - post).max(initial=0.0)) < tol
        post = new
        if done:
            break
    n_reads = np.bincount(reader_of, minlength=n_readers)
    estimates = []
    for r in range(n_readers):
        sb = stats.beta(tp[r] + m * panel_sens + 1e-9, pos[r] - tp[r] + m * (1 - panel_sens)
                        + 1e-9)
        pb = stats.beta(tn[r] + m * panel_spec + 1e-9, neg[r] - tn[r] + m * (1 - panel_spec)
                        + 1e-9)
        estimates.append({
            "sensitivity": float(sens[r]), "sensitivity_ci": _interval(sb),
            "specificity": float(spec[r]), "specificity_ci": _interval(pb),
            "n_images": int(n_reads[r]), "expected_present": round(float(pos[r]), 3),
        })
    return {"posterior": post, "readers": estimates, "prevalence": prev}


def _interval(dist: Any) -> list[float]:
    lo, hi = dist.ppf([0.025, 0.975])
    return [float(lo), float(hi)]


def apply(results: dict[str, ConsensusResult], images: Sequence[ImageReads],
          findings: ImageFindings) -> dict[str, ConsensusResult]:
    """Results with their image labels decided from boxes and findings together."""
    n_reads = {im.image_id: len(im.reads) for im in images}
    for image_id, res in results.items():
        if res.meta.get("undecided"):
            continue  # the strategy declined the image: its labels stay undetermined
        present = findings.present.get(image_id, frozenset())
        res.image_labels = present or consensus_image_labels(len(res.classes),
                                                             n_reads.get(image_id, 0))
        if image_id in findings.votes:
            res.meta = {**res.meta, "image_votes": findings.votes[image_id],
                        "image_scores": findings.scores[image_id]}
    return results
