"""Active-learning selection: which unlabeled images readers should annotate next.

Two halves with different costs:

* **Scoring** (needs the model; run by the batch pre-labelling pass, results
  stored per image): ``training.uncertainty.image_uncertainty`` on each image's
  detections, ``tta_disagreements`` (prediction disagreement under test-time
  augmentation) and ``pooled_features`` (an L2-normalised, globally pooled FPN
  level).
* **Selection** (no model; pure numpy over the stored scores): a strategy from
  the registry below reads a ``PoolScores`` and returns image ids in priority
  order.  15,000 images with 256-d features select 500 in well under a second.

Strategy contract (``Strategy``):

* built from a JSON-like ``params`` dict (``build(name, params)``); unknown,
  missing-type or out-of-range params raise ``DomainError("invalid_params")``
  at construction, never later;
* ``select(pool, budget, *, seed) -> list[str]``: at most ``budget`` distinct
  image ids of the pool, most valuable first (``budget`` larger than the pool
  returns the whole pool, ordered); ``budget`` must be an int >= 0
  (``DomainError("invalid_budget")``);
* deterministic: the same pool contents, budget and ``seed`` give the same list,
  whatever the order of ``pool.image_ids`` or of the dicts (ids are sorted
  internally first); ``seed`` only matters for random choices (``random``,
  ties between equal scores, the first centre of ``diversity`` when nothing is
  labeled yet);
* ``requires``: which stored scores the strategy reads (``"uncertainty"``,
  ``"tta"``, ``"features"``), so the pre-labelling pass knows what to compute.
  A pool image lacking one raises ``DomainError("missing_scores")`` with the
  first missing ids in ``detail``: restrict the pool to scored images rather
  than silently selecting among a part of it.

Strategies:

* ``random``: a seeded permutation;
* ``least_confidence`` / ``entropy``: highest stored ``{name}_{aggregation}``
  first; ``aggregation`` is ``max`` (default: the single most doubtful box),
  ``mean`` or ``sum`` (favours images with many doubtful boxes).  Images without
  detections score 0 (see ``training.uncertainty``) and come last;
* ``tta``: highest stored TTA disagreement first;
* ``diversity``: k-center greedy (core-set) over pooled features: each pick is
  the pool image farthest (Euclidean) from everything labeled or already
  picked; with no labeled features the first centre is a seeded random image;
* ``hybrid``: the ``ceil(pool_factor * budget)`` most uncertain images (by
  ``uncertainty`` = ``entropy`` | ``least_confidence`` | ``tta`` and its
  ``aggregation``), then k-center greedy among them (relative to the labeled
  set; with none, the most uncertain image is the first centre);
* ``localisation_stability``: least stable first.  The model's own boxes are
  compared with its boxes on the same image under pixel noise
  (``localisation_instabilities``, after Kao et al., "Localization-aware
  active learning for object detection", ACCV 2018): an image whose boxes move
  or vanish when the input barely changes is one the model cannot localise;
* ``committee``: highest disagreement between checkpoints first
  (``committee_disagreements``: the newest model against earlier checkpoints
  of the same learner, a query-by-committee whose members cost no extra
  training).  The platform's committee is the scored model version and up to
  two earlier versions of the project.

Ties between equal scores are broken by a seeded permutation (not by id, which
would favour early ids among the many zero-score "nothing detected" images).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Integral
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from annotations.errors import DomainError
from annotations.geometry import iou_matrix
from annotations.params import Choice, Field, Number, Schema
from annotations.registry import Registry

if TYPE_CHECKING:  # the model-based helpers import torch / detectron2 lazily
    from training.detector import Detections, Detector

AGGREGATIONS = ("max", "mean", "sum")
UNCERTAINTY_SCORES = ("least_confidence", "entropy")
SCORE_KINDS = ("uncertainty", "tta", "features", "stability", "committee")
#: Where the model-based scores live in ``PoolScores.uncertainty`` (and in a stored
#: prediction's ``uncertainty`` dict): one JSON dict per image holds every score.
STABILITY_KEY = "localisation_instability"
COMMITTEE_KEY = "committee_disagreement"
#: Pixel-noise levels (standard deviation, on the model's 0..255 gray input) of
#: ``localisation_instabilities``.
STABILITY_NOISE = (8.0, 16.0)

#: Test-time augmentations of ``tta_disagreements``: horizontal flip, gamma.
TTA_GAMMA = 0.8
#: Default FPN level pooled by ``pooled_features``.
FEATURE_LEVEL = "p5"


# --------------------------------------------------------------------------- pool


@dataclass
class PoolScores:
    """The stored scores of the unlabeled pool, read by every strategy.

    ``image_ids``: the pool (unique strings).  Per image id (dicts may hold
    extra ids, which are ignored, or lack some, which only matters to a
    strategy that ``requires`` that score):

    * ``uncertainty``: the ``training.uncertainty.image_uncertainty`` dict
      (``entropy_max``, ``least_confidence_sum``, ...);
    * ``tta``: the ``tta_disagreements`` score in [0, 1];
    * ``features``: the ``pooled_features`` row, ``(d,)``;
    * ``localisation_instability`` / ``committee_disagreement`` (in the
      ``uncertainty`` dict, so one stored JSON carries every score): see
      ``localisation_instabilities`` and ``committee_disagreements``.

    ``labeled_features``: ``(m, d)`` features of already-labeled images (or
    ``None``), so diversity covers the pool *relative to* what is labeled.
    """

    image_ids: Sequence[str]
    uncertainty: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    tta: Mapping[str, float] = field(default_factory=dict)
    features: Mapping[str, np.ndarray] = field(default_factory=dict)
    labeled_features: np.ndarray | None = None

    def __post_init__(self) -> None:
        ids = list(self.image_ids)
        if not all(isinstance(i, str) for i in ids):
            raise DomainError("invalid_scores", "image ids must be strings")
        if len(set(ids)) != len(ids):
            raise DomainError("invalid_scores", "duplicate image ids in the pool")
        self.image_ids = ids

    def __len__(self) -> int:
        return len(self.image_ids)

    def sorted_ids(self) -> list[str]:
        """The canonical order every strategy works in (input order never matters)."""
        return sorted(self.image_ids)

    def _missing(self, what: str, ids: list[str]) -> DomainError:
        return DomainError(
            "missing_scores",
            f"{len(ids)} pool image(s) have no stored {what}; score them or leave them out",
            status=409,
            detail={"score": what, "count": len(ids), "image_ids": ids[:20]},
        )

    def score_vector(self, ids: Sequence[str], key: str) -> np.ndarray:
        """``(n,)`` float64: ``uncertainty[id][key]`` (or the TTA score for ``key="tta"``)."""
        out = np.empty(len(ids), dtype=np.float64)
        missing: list[str] = []
        for k, image_id in enumerate(ids):
            if key == "tta":
                value = self.tta.get(image_id)
            else:
                value = (self.uncertainty.get(image_id) or {}).get(key)
            if value is None:
                missing.append(image_id)
                continue
            out[k] = value
        if missing:
            raise self._missing("tta" if key == "tta" else f"uncertainty {key!r}", missing)
        if not np.all(np.isfinite(out)):
            raise DomainError("invalid_scores", f"non-finite {key!r} scores in the pool")
        return out

    def feature_matrix(self, ids: Sequence[str]) -> np.ndarray:
        """``(n, d)`` float32 features in the order of ``ids``."""
        missing = [i for i in ids if i not in self.features]
        if missing:
            raise self._missing("features", missing)
        if not ids:
            return np.zeros((0, 0), dtype=np.float32)
        rows = [np.asarray(self.features[i], dtype=np.float32).reshape(-1) for i in ids]
        dims = {len(r) for r in rows}
        if len(dims) != 1:
            raise DomainError("invalid_scores", f"features of different sizes: {sorted(dims)}")
        x = np.stack(rows)
        if not np.all(np.isfinite(x)):
            raise DomainError("invalid_scores", "non-finite features in the pool")
        return x

    def labeled_matrix(self, dim: int) -> np.ndarray:
        """``(m, dim)`` float32 labeled features (``m`` may be 0)."""
        if self.labeled_features is None:
            return np.zeros((0, dim), dtype=np.float32)
        lab = np.asarray(self.labeled_features, dtype=np.float32)
        if lab.size == 0:
            return np.zeros((0, dim), dtype=np.float32)
        if lab.ndim != 2 or lab.shape[1] != dim:
            raise DomainError(
                "invalid_scores",
                f"labeled_features must be (m, {dim}), got {tuple(lab.shape)}",
            )
        if not np.all(np.isfinite(lab)):
            raise DomainError("invalid_scores", "non-finite labeled features")
        return lab


# ----------------------------------------------------------------- numpy kernels


def rank_descending(scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices by decreasing score; equal scores in a seeded random order."""
    order = rng.permutation(len(scores))
    return order[np.argsort(-scores[order], kind="stable")]


def k_center_greedy(
    features: np.ndarray,
    budget: int,
    *,
    labeled: np.ndarray | None = None,
    first: int = 0,
) -> np.ndarray:
    """Greedy k-center: ``budget`` row indices of ``features``, in pick order.

    Each pick is the row whose (squared Euclidean) distance to the nearest
    labeled row or earlier pick is largest; ``first`` is the first pick only
    when ``labeled`` is empty.  ``O(budget * n * d)``: one matrix-vector
    product per pick updates every row's distance to its nearest centre.
    Exact duplicates of a centre (distance 0) are picked only after every
    other row.
    """
    x = np.ascontiguousarray(features, dtype=np.float32)
    n = len(x)
    budget = min(int(budget), n)
    if budget <= 0:
        return np.zeros(0, dtype=np.int64)
    sq = np.einsum("ij,ij->i", x, x)
    nearest = np.full(n, np.inf, dtype=np.float32)
    if labeled is not None and len(labeled):
        lab = np.ascontiguousarray(labeled, dtype=np.float32)
        lab_sq = np.einsum("ij,ij->i", lab, lab)
        step = max(1, (1 << 24) // max(n, 1))  # bounds the (n, step) block to ~64 MB
        for start in range(0, len(lab), step):
            block = lab[start : start + step]
            d = sq[:, None] + lab_sq[None, start : start + step] - 2.0 * (x @ block.T)
            np.minimum(nearest, d.min(axis=1), out=nearest)
        np.maximum(nearest, 0.0, out=nearest)
        pick = int(np.argmax(nearest))
    else:
        pick = int(first)
    picks = np.empty(budget, dtype=np.int64)
    for k in range(budget):
        picks[k] = pick
        d = sq + sq[pick] - 2.0 * (x @ x[pick])
        np.minimum(nearest, d, out=nearest)
        nearest[picks[: k + 1]] = -np.inf
        pick = int(np.argmax(nearest))
    return picks


# ---------------------------------------------------------------------- registry


class Strategy(ABC):
    """Base class; subclasses are registered with ``register`` and implement ``_select``.

    ``PARAMS`` maps each accepted param to its field of the shared schema
    (:mod:`annotations.params`), so bad AL params are reported exactly like
    bad consensus or training params.
    """

    name: ClassVar[str] = ""
    PARAMS: ClassVar[dict[str, Field]] = {}

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        self.params = Schema(self.name, self.PARAMS).validate(params)

    @property
    def requires(self) -> frozenset[str]:
        """Stored scores read by ``select`` (subset of ``SCORE_KINDS``)."""
        return frozenset()

    def select(self, pool: PoolScores, budget: int, *, seed: int) -> list[str]:
        if isinstance(budget, bool) or not isinstance(budget, Integral) or budget < 0:
            raise DomainError("invalid_budget", f"budget must be an integer >= 0, got {budget!r}")
        if isinstance(seed, bool) or not isinstance(seed, Integral):
            raise DomainError("invalid_params", f"seed must be an integer, got {seed!r}")
        ids = pool.sorted_ids()
        rng = np.random.default_rng(int(seed))
        picks = self._select(pool, ids, min(int(budget), len(ids)), rng)
        return [ids[int(i)] for i in picks]

    @abstractmethod
    def _select(
        self, pool: PoolScores, ids: list[str], budget: int, rng: np.random.Generator
    ) -> np.ndarray:
        """Indices into ``ids`` (sorted pool ids), at most ``budget``, by priority."""


_REGISTRY: Registry[Strategy] = Registry("active-learning strategy")
register = _REGISTRY.register
get_strategy = _REGISTRY.get
available = _REGISTRY.available
build = _REGISTRY.build


# -------------------------------------------------------------------- strategies


@register("random")
class RandomStrategy(Strategy):
    def _select(self, pool, ids, budget, rng):
        return rng.permutation(len(ids))[:budget]


class _ScoreStrategy(Strategy):
    """Highest stored score first."""

    @abstractmethod
    def score_key(self) -> str:
        """Which stored score ranks the pool."""

    @property
    def requires(self) -> frozenset[str]:
        return frozenset({"tta" if self.score_key() == "tta" else "uncertainty"})

    def _select(self, pool, ids, budget, rng):
        scores = pool.score_vector(ids, self.score_key())
        return rank_descending(scores, rng)[:budget]


@register("least_confidence")
class LeastConfidenceStrategy(_ScoreStrategy):
    PARAMS = {"aggregation": Choice("max", AGGREGATIONS)}

    def score_key(self) -> str:
        return f"least_confidence_{self.params['aggregation']}"


@register("entropy")
class EntropyStrategy(_ScoreStrategy):
    PARAMS = {"aggregation": Choice("max", AGGREGATIONS)}

    def score_key(self) -> str:
        return f"entropy_{self.params['aggregation']}"


@register("tta")
class TTAStrategy(_ScoreStrategy):
    def score_key(self) -> str:
        return "tta"


@register("localisation_stability")
class LocalisationStabilityStrategy(_ScoreStrategy):
    @property
    def requires(self) -> frozenset[str]:
        return frozenset({"stability"})

    def score_key(self) -> str:
        return STABILITY_KEY


@register("committee")
class CommitteeStrategy(_ScoreStrategy):
    @property
    def requires(self) -> frozenset[str]:
        return frozenset({"committee"})

    def score_key(self) -> str:
        return COMMITTEE_KEY


@register("diversity")
class DiversityStrategy(Strategy):
    @property
    def requires(self) -> frozenset[str]:
        return frozenset({"features"})

    def _select(self, pool, ids, budget, rng):
        x = pool.feature_matrix(ids)
        if budget == 0:
            return np.zeros(0, dtype=np.int64)
        labeled = pool.labeled_matrix(x.shape[1])
        first = int(rng.integers(len(ids)))
        return k_center_greedy(x, budget, labeled=labeled, first=first)


@register("hybrid")
class HybridStrategy(Strategy):
    PARAMS = {
        "uncertainty": Choice("entropy", (*UNCERTAINTY_SCORES, "tta")),
        "aggregation": Choice("max", AGGREGATIONS),
        "pool_factor": Number(5.0, lo=1.0),
    }

    def score_key(self) -> str:
        kind = self.params["uncertainty"]
        return "tta" if kind == "tta" else f"{kind}_{self.params['aggregation']}"

    @property
    def requires(self) -> frozenset[str]:
        kind = "tta" if self.params["uncertainty"] == "tta" else "uncertainty"
        return frozenset({kind, "features"})

    def _select(self, pool, ids, budget, rng):
        scores = pool.score_vector(ids, self.score_key())
        x = pool.feature_matrix(ids)
        if budget == 0:
            return np.zeros(0, dtype=np.int64)
        top = math.ceil(self.params["pool_factor"] * budget - 1e-9)
        candidates = rank_descending(scores, rng)[:top]
        labeled = pool.labeled_matrix(x.shape[1])
        picks = k_center_greedy(x[candidates], budget, labeled=labeled, first=0)
        return candidates[picks]


# --------------------------------------------------- scoring helpers (need the model)


def _agreement(
    ref: tuple[np.ndarray, np.ndarray, np.ndarray], other: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> float:
    """Score-weighted mean, over both sides' detections, of the best same-class IoU.

    IoU is the platform's one (:mod:`annotations.geometry`): a zero-area box
    agrees with nothing, not even an identical zero-area box.
    """
    (b1, s1, c1), (b2, s2, c2) = ref, other
    total = float(s1.sum() + s2.sum())
    if total <= 0:
        return 1.0  # nothing detected on either side: full agreement
    if len(s1) == 0 or len(s2) == 0:
        return 0.0
    iou = iou_matrix(b1, b2) * (c1[:, None] == c2[None, :])
    return float((s1 @ iou.max(axis=1) + s2 @ iou.max(axis=0)) / total)


def _unpack(det: Detections, min_score: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    scores = np.asarray(det.scores, dtype=np.float64).reshape(-1)
    keep = scores >= min_score
    boxes = np.asarray(det.boxes, dtype=np.float64).reshape(-1, 4)[keep]
    classes = np.asarray(det.classes).reshape(-1)[keep]
    return boxes, scores[keep], classes


def prediction_disagreement(
    reference: Detections, augmented: Sequence[Detections], *, min_score: float = 0.0
) -> float:
    """1 - mean agreement between ``reference`` and each augmented prediction, in [0, 1].

    Boxes must be in the same frame (undo geometric augmentations first).
    Agreement of two predictions is symmetric: every detection (of either
    side, score >= ``min_score``) looks for its best-overlapping detection of
    the same class on the other side; agreement is the mean of those IoUs
    weighted by detection score.  Both sides empty -> agreement 1 (the model
    consistently sees nothing); exactly one side empty -> 0.  Identical
    predictions -> disagreement 0.
    """
    if not augmented:
        return 0.0
    ref = _unpack(reference, min_score)
    values = [_agreement(ref, _unpack(det, min_score)) for det in augmented]
    return float(np.clip(1.0 - float(np.mean(values)), 0.0, 1.0))


def _unflip(det: Detections) -> Detections:
    from training.detector import Detections

    width = float(det.image_size[1])
    boxes = np.asarray(det.boxes, dtype=np.float64).reshape(-1, 4).copy()
    boxes[:, [0, 2]] = width - boxes[:, [2, 0]]
    return Detections(
        boxes=boxes,
        scores=det.scores,
        classes=det.classes,
        probs=det.probs,
        image_size=det.image_size,
    )


def _gamma_shift(image: np.ndarray, gamma: float) -> np.ndarray:
    """The model-input gray image (uint16 already stretched) with gamma applied, as uint8."""
    from training.inputs import to_model_image

    gray = to_model_image(image)[:, :, 0] / 255.0
    return np.clip(np.rint(255.0 * np.power(gray, gamma)), 0, 255).astype(np.uint8)


def tta_disagreements(
    detector: Detector,
    images: Sequence[np.ndarray],
    *,
    gamma: float = TTA_GAMMA,
    min_score: float = 0.0,
) -> np.ndarray:
    """``(n,)`` test-time-augmentation disagreement per image, in [0, 1].

    Each image is predicted as is, horizontally flipped (boxes flipped back)
    and intensity-shifted (gamma ``gamma`` on the model's 0..255 gray input:
    0.8 brightens mid-tones); the score is ``prediction_disagreement`` of the
    original prediction against the two augmented ones.  All ``3n`` images go
    through one ``detector.predict`` call (batched by shape).  Any object with
    ``predict(images) -> list[Detections]`` works as ``detector``.
    """
    images = list(images)
    if not images:
        return np.zeros(0, dtype=np.float64)
    flipped = [np.ascontiguousarray(np.asarray(im)[:, ::-1]) for im in images]
    shifted = [_gamma_shift(im, gamma) for im in images]
    preds = detector.predict([*images, *flipped, *shifted])
    n = len(images)
    return np.array(
        [
            prediction_disagreement(
                preds[i], [_unflip(preds[n + i]), preds[2 * n + i]], min_score=min_score
            )
            for i in range(n)
        ],
        dtype=np.float64,
    )


def tta_disagreement(detector: Detector, image: np.ndarray, **kwargs: Any) -> float:
    """``tta_disagreements`` for one image."""
    return float(tta_disagreements(detector, [image], **kwargs)[0])


def pooled_features(
    detector: Detector,
    images: Sequence[np.ndarray],
    *,
    level: str = FEATURE_LEVEL,
    batch_size: int | None = None,
) -> np.ndarray:
    """``(n, d)`` float32: global average pooling of backbone output ``level``, L2-normalised.

    Inputs are prepared exactly as ``Detector.predict`` prepares them
    (``detector._prepare``: gray-3 pixels, test resize, the model's pixel
    normalisation) and run through ``detector.model.backbone`` only.  The
    average covers the image's own region of the feature map, not the
    size-divisibility padding; images are batched only with others of the
    same resized shape (as in ``predict``), so a row never depends on its
    batch neighbours.  ``d`` is the FPN width (256 for ``r50_fpn``, 64 for
    ``tiny``).  An all-zero pooled vector stays zero.
    """
    import torch

    model = detector.model
    shapes = model.backbone.output_shape()
    if level not in shapes:
        raise DomainError(
            "invalid_params", f"unknown feature level {level!r}", detail=sorted(shapes)
        )
    stride = int(shapes[level].stride)
    images = list(images)
    dim = int(shapes[level].channels)
    out = np.zeros((len(images), dim), dtype=np.float32)
    if not images:
        return out
    prepared = [detector._prepare(im) for im in images]
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, item in enumerate(prepared):
        groups.setdefault(tuple(item["image"].shape), []).append(i)
    size = max(1, batch_size or getattr(detector, "batch_size", 4))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for indices in groups.values():
                for start in range(0, len(indices), size):
                    chunk = indices[start : start + size]
                    batch = model.preprocess_image([prepared[i] for i in chunk])
                    fmap = model.backbone(batch.tensor)[level]
                    for row, i in enumerate(chunk):
                        h, w = batch.image_sizes[row]
                        hv, wv = max(1, -(-h // stride)), max(1, -(-w // stride))
                        pooled = fmap[row, :, :hv, :wv].float().mean(dim=(1, 2))
                        out[i] = pooled.cpu().numpy()
    finally:
        model.train(was_training)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norms > 0, norms, 1.0)


def _noisy(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """The model-input gray image plus Gaussian noise of ``sigma`` grey levels, as uint8."""
    from training.inputs import to_model_image

    gray = to_model_image(image)[:, :, 0]
    noisy = gray + rng.normal(0.0, sigma, gray.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def _content_key(image: np.ndarray) -> int:
    """A 64-bit seed from an image's pixels and shape."""
    import hashlib

    arr = np.ascontiguousarray(image)
    h = hashlib.blake2b(str(arr.shape).encode(), digest_size=8, person=b"cxr-al")
    h.update(arr.tobytes())
    return int.from_bytes(h.digest(), "little")


def _localisation_stability(ref: tuple[np.ndarray, np.ndarray, np.ndarray],
                            other: tuple[np.ndarray, np.ndarray, np.ndarray]) -> float:
    """Score-weighted mean over the reference boxes of the best same-class IoU in ``other``.

    One-sided, unlike ``_agreement``: the question is whether the boxes the model
    gives *now* survive a small change of the input, not whether noise adds boxes.
    """
    boxes, scores, classes = ref
    total = float(scores.sum())
    if total <= 0:
        return 1.0
    b2, _, c2 = other
    if len(b2) == 0:
        return 0.0
    iou = iou_matrix(boxes, b2) * (classes[:, None] == c2[None, :])
    return float(scores @ iou.max(axis=1) / total)


def localisation_instabilities(
    detector: Detector,
    images: Sequence[np.ndarray],
    *,
    noise: Sequence[float] = STABILITY_NOISE,
    min_score: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    """``(n,)`` in [0, 1]: 1 - how well the model's boxes survive pixel noise.

    Each image is predicted as is and with Gaussian noise of each level in
    ``noise`` (seeded by the image's own pixels, so a score depends neither on
    the other images of the call nor on their order); per noisy copy the
    stability is the score-weighted mean, over the reference boxes, of the
    best same-class IoU among the noisy prediction's boxes; the image's
    score is one minus the mean stability.
    No reference boxes -> 0 (nothing to localise), as the uncertainty scores
    give 0 to images without detections.
    """
    images = list(images)
    if not images:
        return np.zeros(0, dtype=np.float64)
    keys = [_content_key(im) for im in images]
    noisy = [_noisy(im, float(sigma), np.random.default_rng([seed, keys[i], k]))
             for k, sigma in enumerate(noise) for i, im in enumerate(images)]
    preds = detector.predict([*images, *noisy])
    n = len(images)
    out = np.zeros(n, dtype=np.float64)
    for i in range(n):
        ref = _unpack(preds[i], min_score)
        if len(ref[1]) == 0 or not noise:
            continue
        values = [_localisation_stability(ref, _unpack(preds[n * (1 + k) + i], min_score))
                  for k in range(len(noise))]
        out[i] = float(np.clip(1.0 - float(np.mean(values)), 0.0, 1.0))
    return out


def committee_disagreements(
    members: Sequence[Sequence[Detections]], *, min_score: float = 0.0
) -> np.ndarray:
    """``(n,)`` in [0, 1]: disagreement of a committee's predictions per image.

    ``members``: one list of per-image ``Detections`` per committee member,
    the newest (the model that will pre-label) first.  The score is
    ``prediction_disagreement`` of the newest against every other member, so
    a committee of one scores 0 everywhere.
    """
    if not members:
        return np.zeros(0, dtype=np.float64)
    n = len(members[0])
    if any(len(m) != n for m in members):
        raise DomainError("invalid_scores", "committee members predicted different images")
    return np.array(
        [prediction_disagreement(members[0][i], [m[i] for m in members[1:]],
                                 min_score=min_score) for i in range(n)],
        dtype=np.float64,
    )
