"""Active-learning strategies on crafted pools, and the model-based scoring helpers."""

from __future__ import annotations

import numpy as np
import pytest

from annotations.errors import DomainError
from training.active_learning import (
    COMMITTEE_KEY,
    STABILITY_KEY,
    PoolScores,
    available,
    build,
    committee_disagreements,
    get_strategy,
    k_center_greedy,
    localisation_instabilities,
    pooled_features,
    prediction_disagreement,
    tta_disagreement,
    tta_disagreements,
)
from training.uncertainty import image_uncertainty


def _unc(*rows: list[float]) -> dict[str, float]:
    return image_uncertainty(np.array(rows, dtype=float).reshape(-1, 3))


CONFIDENT = [0.98, 0.01, 0.01]
DOUBTFUL = [0.4, 0.35, 0.25]
MILD = [0.7, 0.2, 0.1]
HALF = [0.5, 0.3, 0.2]


@pytest.fixture
def uncertainty_pool() -> PoolScores:
    return PoolScores(
        image_ids=["e", "d", "c", "b", "a"],  # input order never matters
        uncertainty={
            "a": _unc(CONFIDENT),
            "b": _unc(DOUBTFUL, CONFIDENT, CONFIDENT, CONFIDENT),  # one very doubtful box
            "c": _unc(MILD, MILD, MILD),  # many mildly doubtful boxes
            "d": _unc(),  # nothing detected
            "e": _unc(HALF),  # one fairly doubtful box
        },
        tta={"a": 0.9, "b": 0.1, "c": 0.5, "d": 0.0, "e": 0.7},
    )


# ----------------------------------------------------------------------- registry


def test_registry_lists_and_builds_every_strategy():
    assert available() == [
        "committee",
        "diversity",
        "entropy",
        "hybrid",
        "least_confidence",
        "localisation_stability",
        "random",
        "tta",
    ]
    for name in available():
        strategy = build(name)
        assert strategy.name == name and isinstance(strategy, get_strategy(name))
    assert build("hybrid").requires == {"uncertainty", "features"}
    assert build("hybrid", {"uncertainty": "tta"}).requires == {"tta", "features"}
    assert build("entropy").requires == {"uncertainty"}
    assert build("random").requires == frozenset()
    assert build("localisation_stability").requires == {"stability"}
    assert build("committee").requires == {"committee"}
    assert build("entropy", {"aggregation": "sum"}).params == {"aggregation": "sum"}


@pytest.mark.parametrize(
    "name, params",
    [
        ("entropy", {"aggregation": "median"}),
        ("entropy", {"agg": "max"}),
        ("random", {"anything": 1}),
        ("hybrid", {"pool_factor": 0.5}),
        ("hybrid", {"pool_factor": "3"}),
        ("hybrid", {"pool_factor": float("nan")}),
        ("hybrid", {"uncertainty": "random"}),
        ("entropy", ["aggregation"]),
    ],
)
def test_bad_params_raise_invalid_params(name, params):
    with pytest.raises(DomainError) as err:
        build(name, params)
    assert err.value.code == "invalid_params"


def test_unknown_strategy_and_bad_budget(uncertainty_pool):
    with pytest.raises(DomainError) as err:
        build("bald")
    assert err.value.code == "unknown_strategy"
    for budget in (-1, 1.5, True):
        with pytest.raises(DomainError) as err:
            build("random").select(uncertainty_pool, budget, seed=0)
        assert err.value.code == "invalid_budget"


# ---------------------------------------------------------------- uncertainty


@pytest.mark.parametrize(
    "aggregation, expected",
    [
        ("max", ["b", "e", "c", "a", "d"]),  # b holds the single most uncertain box
        ("mean", ["e", "c", "b", "a", "d"]),  # b's doubtful box is diluted by 3 confident
        ("sum", ["c", "b", "e", "a", "d"]),  # c: many mildly doubtful boxes add up
    ],
)
def test_entropy_aggregations(uncertainty_pool, aggregation, expected):
    strategy = build("entropy", {"aggregation": aggregation})
    assert strategy.select(uncertainty_pool, 5, seed=0) == expected
    assert strategy.select(uncertainty_pool, 2, seed=5) == expected[:2]


@pytest.mark.parametrize(
    "aggregation, expected",
    [("max", ["b", "e", "c"]), ("mean", ["e", "c", "b"]), ("sum", ["c", "b", "e"])],
)
def test_least_confidence_aggregations(uncertainty_pool, aggregation, expected):
    strategy = build("least_confidence", {"aggregation": aggregation})
    assert strategy.select(uncertainty_pool, 3, seed=0) == expected


def test_tta_strategy_reads_stored_disagreement(uncertainty_pool):
    assert build("tta").select(uncertainty_pool, 10, seed=3) == ["a", "e", "c", "b", "d"]


def test_ties_broken_by_seed_not_by_id():
    pool = PoolScores(
        image_ids=[f"img{i:02d}" for i in range(30)],
        uncertainty={f"img{i:02d}": _unc() for i in range(30)},  # all zero
    )
    strategy = build("entropy")
    first = strategy.select(pool, 30, seed=1)
    assert first == strategy.select(pool, 30, seed=1)
    assert first != strategy.select(pool, 30, seed=2)
    assert sorted(first) == sorted(pool.image_ids)


def test_missing_scores_raise(uncertainty_pool):
    pool = PoolScores(image_ids=["a", "z"], uncertainty=uncertainty_pool.uncertainty)
    with pytest.raises(DomainError) as err:
        build("entropy").select(pool, 1, seed=0)
    assert err.value.code == "missing_scores" and err.value.detail["image_ids"] == ["z"]
    with pytest.raises(DomainError) as err:
        build("tta").select(PoolScores(image_ids=["a"]), 1, seed=0)
    assert err.value.code == "missing_scores"


# ---------------------------------------------------------------------- random


def test_random_is_deterministic_per_seed_and_varies_across_seeds():
    pool = PoolScores(image_ids=[str(i) for i in range(50)])
    reversed_pool = PoolScores(image_ids=[str(i) for i in reversed(range(50))])
    strategy = build("random")
    a = strategy.select(pool, 10, seed=7)
    assert a == strategy.select(pool, 10, seed=7) == strategy.select(reversed_pool, 10, seed=7)
    assert a != strategy.select(pool, 10, seed=8)
    assert len(set(a)) == 10


@pytest.mark.parametrize("name", ["random", "entropy", "tta", "diversity", "hybrid"])
def test_budget_larger_than_pool_returns_everything(uncertainty_pool, name):
    uncertainty_pool.features = {k: np.eye(5)[i] for i, k in enumerate("abcde")}
    picks = build(name).select(uncertainty_pool, 100, seed=0)
    assert sorted(picks) == ["a", "b", "c", "d", "e"]
    assert build(name).select(uncertainty_pool, 0, seed=0) == []
    assert build(name).select(PoolScores(image_ids=[]), 5, seed=0) == []


# ------------------------------------------------------------------- diversity


def _clusters() -> tuple[list[str], dict[str, np.ndarray]]:
    """Three tight clusters (5 points each) at far-apart centres."""
    centres = {"x": [0.0, 0.0], "y": [10.0, 0.0], "z": [0.0, 10.0]}
    rng = np.random.default_rng(0)
    feats = {
        f"{c}{i}": np.array(centre) + rng.normal(0, 0.1, 2)
        for c, centre in centres.items()
        for i in range(5)
    }
    return sorted(feats), feats


def test_k_center_greedy_first_picks_farthest_from_labeled():
    x = np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0], [5.2, 0.0], [-3.0, 0.0]])
    picks = k_center_greedy(x, 3, labeled=np.array([[0.0, 0.0]]))
    assert picks.tolist() == [3, 4, 1]  # 5.2 (farthest), then -3, then 1 (gap 1.0 > 0.2)
    assert k_center_greedy(x, 2, first=0).tolist() == [0, 3]
    # duplicates of a centre come only after every other point
    dup = np.array([[0.0, 0.0], [0.0, 0.0], [0.1, 0.0]])
    assert k_center_greedy(dup, 3, first=0).tolist() == [0, 2, 1]


def test_diversity_covers_clusters_relative_to_labeled():
    ids, feats = _clusters()
    pool = PoolScores(image_ids=ids, features=feats, labeled_features=np.array([[0.0, 0.0]]))
    picks = build("diversity").select(pool, 2, seed=0)
    assert {p[0] for p in picks} == {"y", "z"}  # the labeled cluster x is already covered
    # without a labeled set: one pick per cluster whatever the seeded first centre
    cold = PoolScores(image_ids=ids, features=feats)
    for seed in range(4):
        assert {p[0] for p in build("diversity").select(cold, 3, seed=seed)} == {"x", "y", "z"}


def test_diversity_without_features_raises():
    pool = PoolScores(image_ids=["a", "b"], features={"a": np.ones(3)})
    with pytest.raises(DomainError) as err:
        build("diversity").select(pool, 1, seed=0)
    assert err.value.code == "missing_scores" and err.value.detail["score"] == "features"
    bad_labeled = PoolScores(
        image_ids=["a"], features={"a": np.ones(3)}, labeled_features=np.ones((2, 4))
    )
    with pytest.raises(DomainError) as err:
        build("diversity").select(bad_labeled, 1, seed=0)
    assert err.value.code == "invalid_scores"


def test_hybrid_restricts_to_uncertain_then_diversifies():
    ids, feats = _clusters()
    # cluster x: very uncertain; y: fairly uncertain; z: confident
    level = {"x": 0.9, "y": 0.6, "z": 0.05}
    unc = {i: {"entropy_max": level[i[0]] - 0.01 * int(i[1])} for i in ids}
    pool = PoolScores(image_ids=ids, uncertainty=unc, features=feats)
    # top 2 * 3 = 6: all of x (5) and y0; diversify -> x0 (most uncertain) then y0
    picks = build("hybrid", {"pool_factor": 2}).select(pool, 3, seed=0)
    assert picks[:2] == ["x0", "y0"] and picks[2][0] == "x"
    assert not any(p.startswith("z") for p in picks)
    # plain entropy would take x0..x2; plain diversity would reach z
    assert build("entropy").select(pool, 3, seed=0) == ["x0", "x1", "x2"]
    # pool_factor 1 -> exactly the top-uncertain set, in k-center order
    exact = build("hybrid", {"pool_factor": 1}).select(pool, 3, seed=0)
    assert sorted(exact) == ["x0", "x1", "x2"]


def test_pool_validation():
    with pytest.raises(DomainError) as err:
        PoolScores(image_ids=["a", "a"])
    assert err.value.code == "invalid_scores"
    pool = PoolScores(image_ids=["a"], uncertainty={"a": {"entropy_max": float("nan")}})
    with pytest.raises(DomainError) as err:
        build("entropy").select(pool, 1, seed=0)
    assert err.value.code == "invalid_scores"


# ------------------------------------------------------------ disagreement (pure)


def _det(boxes, scores, classes, size=(128, 128)):
    from training.detector import Detections

    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    n = len(boxes)
    return Detections(
        boxes=boxes,
        scores=np.asarray(scores, dtype=np.float64),
        classes=np.asarray(classes, dtype=np.int64),
        probs=np.zeros((n, 3)),
        image_size=size,
    )


def test_prediction_disagreement_cases():
    d = _det([[10, 10, 50, 50], [60, 60, 90, 90]], [0.9, 0.3], [0, 1])
    empty = _det(np.zeros((0, 4)), [], [])
    assert prediction_disagreement(d, [d, d]) == pytest.approx(0.0)
    assert prediction_disagreement(empty, [empty, empty]) == 0.0
    assert prediction_disagreement(d, [empty]) == 1.0
    assert prediction_disagreement(empty, [d]) == 1.0
    # same boxes, classes swapped -> no class-matching overlap
    assert prediction_disagreement(d, [_det(d.boxes, d.scores, [1, 0])]) == pytest.approx(1.0)
    # the confident box agrees, the weak one vanishes: weighted by score
    partial = prediction_disagreement(d, [_det(d.boxes[:1], [0.9], [0])])
    assert partial == pytest.approx(0.3 / (0.9 + 0.3 + 0.9))
    assert 0.0 <= prediction_disagreement(d, [d, empty]) == pytest.approx(0.5)
    # min_score drops the weak box on both sides
    assert prediction_disagreement(d, [_det(d.boxes[:1], [0.9], [0])], min_score=0.5) == 0.0


class _BrightBoxDetector:
    """Stands in for Detector: one box around the pixels brighter than 128."""

    def predict(self, images):
        out = []
        for im in images:
            gray = np.asarray(im, dtype=float)
            ys, xs = np.nonzero(gray > 128)
            box = [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]] if len(xs) else []
            out.append(
                _det(
                    np.array(box).reshape(-1, 4),
                    [0.8] * len(box),
                    [0] * len(box),
                    size=gray.shape[:2],
                )
            )
        return out


def test_tta_flip_boxes_are_mapped_back():
    img = np.full((64, 96), 20, dtype=np.uint8)
    img[10:30, 5:25] = 200  # off-centre: a wrong un-flip would not overlap
    fake = _BrightBoxDetector()
    assert tta_disagreement(fake, img) == pytest.approx(0.0)
    assert tta_disagreement(fake, np.full((64, 96), 20, dtype=np.uint8)) == 0.0
    # gamma brightening pushes a mid-grey region over the threshold: disagreement
    grey = img.copy()
    grey[40:60, 60:90] = 120
    assert 0.0 < tta_disagreement(fake, grey) <= 1.0


# -------------------------------------------------------- with a tiny real model


@pytest.fixture(scope="module")
def tiny_detector(tmp_path_factory):
    import torch

    import training.compat  # noqa: F401  (patches libraries before detectron2 loads)

    # isort: split
    from detectron2.modeling import build_model

    from training.config import build_config
    from training.detector import Detector, save_model_version

    torch.set_num_threads(1)
    torch.manual_seed(0)

    cfg = build_config(2, preset="tiny", class_names=["A", "B"], device="cpu")
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    directory = tmp_path_factory.mktemp("al_model")
    save_model_version(build_model(cfg), cfg, directory)
    return Detector.from_dir(directory, device="cpu")


def _films():
    from tests.training.films import film

    return [film(0), film(1, lesion=False), film(2)]


def test_pooled_features_shape_norm_and_batch_independence(tiny_detector):
    import cv2

    images = [*_films(), cv2.resize(_films()[0], (160, 96))]
    feats = pooled_features(tiny_detector, images)
    assert feats.shape == (4, 64) and feats.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    alone = pooled_features(tiny_detector, [images[2]], batch_size=1)
    np.testing.assert_allclose(alone[0], feats[2], atol=1e-5)
    assert pooled_features(tiny_detector, images[:1], level="p3").shape == (1, 64)
    with pytest.raises(DomainError) as err:
        pooled_features(tiny_detector, images[:1], level="res9")
    assert err.value.code == "invalid_params"
    # the features feed diversity directly
    ids = ["f0", "f1", "f2", "f3"]
    pool = PoolScores(image_ids=ids, features=dict(zip(ids, feats, strict=True)))
    assert sorted(build("diversity").select(pool, 4, seed=0)) == ids


def test_tta_disagreement_on_tiny_model(tiny_detector):
    images = _films()
    assert len(tiny_detector.predict(images[:1])[0]) > 0  # threshold 0: there is something
    scores = tta_disagreements(tiny_detector, images)
    assert scores.shape == (3,)
    assert np.all((scores >= 0.0) & (scores <= 1.0))
    preds = tiny_detector.predict(images[:1])
    assert prediction_disagreement(preds[0], preds) == pytest.approx(0.0)
    assert tta_disagreement(tiny_detector, images[0]) == pytest.approx(scores[0], abs=1e-6)
    assert tta_disagreements(tiny_detector, []).shape == (0,)


# ------------------------------------------- localisation stability and committee


class _ShakyDetector(_BrightBoxDetector):
    """Boxes around bright pixels; a box on a dim region also wanders with pixel noise."""

    def predict(self, images):
        out = []
        for im in images:
            gray = np.asarray(im, dtype=float)
            boxes = []
            for lo, hi in ((128, 256), (60, 100)):  # a bright lesion, a faint one
                ys, xs = np.nonzero((gray > lo) & (gray < hi))
                if len(xs) >= 20:
                    boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            out.append(_det(np.array(boxes).reshape(-1, 4), [0.8] * len(boxes),
                            [0] * len(boxes), size=gray.shape[:2]))
        return out


def test_localisation_instability_ranks_the_film_whose_boxes_move_under_noise_first():
    steady = np.full((64, 64), 20, dtype=np.uint8)
    steady[10:30, 10:30] = 220  # far from every threshold: noise cannot move its box
    faint = steady.copy()
    faint[40:56, 40:56] = 80  # inside the faint band: noise spills pixels across it
    empty = np.full((64, 64), 20, dtype=np.uint8)
    det = _ShakyDetector()
    scores = localisation_instabilities(det, [steady, faint, empty], noise=(12.0, 24.0))
    assert scores[0] == pytest.approx(0.0, abs=1e-9)
    assert scores[1] > 0.05
    assert scores[2] == 0.0  # nothing detected: nothing to localise
    # a score never depends on what else is in the call
    alone = localisation_instabilities(det, [faint], noise=(12.0, 24.0))
    assert alone[0] == pytest.approx(scores[1])
    assert localisation_instabilities(det, []).shape == (0,)
    ids = ["steady", "faint", "empty"]
    pool = PoolScores(image_ids=ids, uncertainty={
        i: {STABILITY_KEY: float(v)} for i, v in zip(ids, scores, strict=True)})
    assert build("localisation_stability").select(pool, 1, seed=0) == ["faint"]
    with pytest.raises(DomainError) as err:
        build("localisation_stability").select(PoolScores(image_ids=ids), 1, seed=0)
    assert err.value.code == "missing_scores"


def test_committee_disagreement_is_zero_for_agreeing_members_and_ranks_the_disputed_film():
    a = _det([[10, 10, 40, 40]], [0.9], [0])
    moved = _det([[25, 25, 60, 60]], [0.9], [0])
    empty = _det(np.zeros((0, 4)), [], [])
    newest = [a, a, empty]
    older = [a, moved, empty]
    scores = committee_disagreements([newest, older, older])
    assert scores[0] == pytest.approx(0.0) and scores[2] == 0.0
    assert 0.5 < scores[1] <= 1.0
    assert np.all(committee_disagreements([newest]) == 0.0)  # a committee of one
    with pytest.raises(DomainError) as err:
        committee_disagreements([newest, older[:2]])
    assert err.value.code == "invalid_scores"
    ids = ["x", "y", "z"]
    pool = PoolScores(image_ids=ids, uncertainty={
        i: {COMMITTEE_KEY: float(v)} for i, v in zip(ids, scores, strict=True)})
    assert build("committee").select(pool, 1, seed=3) == ["y"]
