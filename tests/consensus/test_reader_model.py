"""reader_model: does it recover a panel it has never seen, and is it honest about
how sure it is?  Every panel here is simulated with a hidden truth."""

import numpy as np
import pytest

from annotations.consensus import build
from annotations.consensus.agreement import image_agreement
from annotations.consensus.routing import by_uncertainty
from annotations.consensus.simulate import (
    NOISY_GOOD_READERS,
    SimReader,
    calibration,
    f1_against_truth,
    scored_against_truth,
    simulate_panel,
)
from tests.consensus.helpers import image, read
from tests.consensus.test_strategies import _shuffled

POOL = tuple(
    SimReader(f"R{i + 1}", s, fp, 0.05)
    for i, (s, fp) in enumerate([(0.9, 0.05), (0.85, 0.1), (0.8, 0.3), (0.7, 0.6),
                                 (0.6, 1.0), (0.95, 0.02), (0.5, 0.2), (0.75, 1.4)])
)


@pytest.fixture(scope="module")
def panel():
    images, truth = simulate_panel(POOL, k=3, n_images=3000, seed=5)
    model = build("reader_model")
    return images, truth, model, model.run(images)


def test_estimates_recover_what_each_reader_did_within_005(panel):
    _images, truth, model, _ = panel
    for r in POOL:
        real, est = truth.realised(r.code), model.reader_estimates[r.code]
        assert real["reads"] > 1000
        assert abs(est["sensitivity"] - real["sensitivity"]) < 0.05, r.code
        assert abs(est["fp_per_image"] - real["fp_per_image"]) < 0.05, r.code
        lo, hi = est["sensitivity_ci"]
        assert lo < est["sensitivity"] < hi


def test_a_noisy_reader_cannot_pass_for_a_careful_one(panel):
    _images, _truth, model, _ = panel
    est = model.reader_estimates
    assert est["R6"]["sensitivity"] > est["R7"]["sensitivity"] + 0.3
    assert est["R8"]["fp_per_image"] > 10 * est["R6"]["fp_per_image"]


def test_posterior_is_calibrated_against_the_truth(panel):
    images, truth, _model, _ = panel
    every = build("reader_model", {"decision": "threshold", "threshold": 0.0}).run(images)
    ece, curve = calibration(*scored_against_truth(every, truth.boxes))
    assert ece < 0.03, curve
    assert len(curve) >= 5  # the posteriors spread over the range, not just 0 and 1


def test_beats_majority_and_reader_weighted_on_their_home_grounds(panel):
    images, truth, _model, results = panel
    ours = f1_against_truth(results, truth.boxes)["f1"]
    for name in ("majority", "reader_weighted", "wbf"):
        assert ours > f1_against_truth(build(name).run(images), truth.boxes)["f1"], name
    noisy, noisy_truth = simulate_panel(NOISY_GOOD_READERS, None, 1500, seed=2)
    ours = f1_against_truth(build("reader_model").run(noisy), noisy_truth.boxes)["f1"]
    assert ours >= f1_against_truth(build("majority").run(noisy), noisy_truth.boxes)["f1"]


def test_reader_with_30_reads_shrinks_towards_the_panel():
    newcomer = SimReader("R9", 0.3, 1.5, 0.05, max_reads=30)
    images, truth = simulate_panel(POOL + (newcomer,), k=3, n_images=2000, seed=8)
    model = build("reader_model")
    model.run(images)
    est, panel_mean = model.reader_estimates, np.mean(
        [model.reader_estimates[r.code]["sensitivity"] for r in POOL])
    new, old = est["R9"], est["R1"]
    assert truth.reads["R9"] == 30
    assert truth.realised("R9")["sensitivity"] < new["sensitivity"] < panel_mean
    width = lambda e: e["sensitivity_ci"][1] - e["sensitivity_ci"][0]  # noqa: E731
    assert width(new) > 3 * width(old)
    assert new["fp_per_image_ci"][0] < 1.5 < new["fp_per_image_ci"][1]


def test_a_loose_boxer_is_learned_and_corrected():
    loose = SimReader("R9", 0.9, 0.05, 0.04, looseness=1.5)
    images, truth = simulate_panel(POOL + (loose,), k=3, n_images=2500, seed=9)
    model = build("reader_model")
    results = model.run(images)
    assert model.reader_estimates["R9"]["box_scale"] == pytest.approx(1.5, abs=0.1)
    assert model.reader_estimates["R1"]["box_scale"] == pytest.approx(1.0, abs=0.1)
    assert f1_against_truth(results, truth.boxes)["f1"] > f1_against_truth(
        build("majority").run(images), truth.boxes)["f1"]


def test_same_result_whatever_the_order_of_images_and_reads(panel):
    images, _truth, _model, results = panel
    again = build("reader_model").run(_shuffled(images[:800], 3))
    first = build("reader_model").run(images[:800])
    assert all(first[k].same_as(again[k]) for k in first)


def test_routing_by_uncertainty_finds_wrong_images_first(panel):
    images, truth, _model, results = panel
    wrong = {}
    for image_id, (t_boxes, t_cls) in truth.boxes.items():
        m = f1_against_truth({image_id: results[image_id]}, {image_id: (t_boxes, t_cls)})
        wrong[image_id] = m["tp"] < max(m["n_pred"], m["n_true"])
    budget = 150
    chosen = by_uncertainty({i: r.meta for i, r in results.items()}, budget)
    by_agreement = sorted(
        (a if (a := image_agreement(im, 0.4)) is not None else 1.0, im.image_id)
        for im in images)
    base_rate = np.mean(list(wrong.values()))
    precision = np.mean([wrong[i] for i in chosen])
    precision_agreement = np.mean([wrong[i] for _a, i in by_agreement[:budget]])
    assert len(chosen) == budget
    assert precision > 2 * base_rate
    assert precision > precision_agreement + 0.1


def test_edge_cases_no_boxes_one_reader_nothing():
    assert build("reader_model").run([]) == {}
    normal = build("reader_model").run([image("a", read("R1"), read("R2"))])["a"]
    assert len(normal.classes) == 0 and normal.meta["p_error"] == 0.0
    one = build("reader_model").run([image("b", read("R1", (0, 10, 10, 50, 50)))])["b"]
    assert 0.0 < one.scores.max(initial=0.5) <= 1.0 and "p_error" in one.meta
