import numpy as np

from annotations.consensus import build
from annotations.consensus.simulate import UNEQUAL_READERS, f1_against_truth, simulate
from tests.consensus.helpers import image, read


def test_reader_weighted_beats_majority_with_one_much_worse_reader():
    images, truth = simulate(UNEQUAL_READERS, n_images=600, seed=3)
    majority = f1_against_truth(build("majority").run(images), truth)
    strategy = build("reader_weighted")
    weighted = f1_against_truth(strategy.run(images), truth)
    assert weighted["f1"] > majority["f1"] + 0.03
    est = strategy.reader_estimates
    assert est["C"]["sensitivity"] < est["A"]["sensitivity"]
    assert est["C"]["precision"] < 0.5 < est["A"]["precision"]


def test_reader_weighted_meta_and_attribute():
    im = image("a", read("R1", (0, 10, 10, 50, 50)), read("R2", (0, 10, 10, 50, 50)), read("R3"))
    strategy = build("reader_weighted")
    res = strategy.run([im])["a"]
    assert set(res.meta["reader_estimates"]) == {"R1", "R2", "R3"}
    assert set(strategy.reader_estimates) == {"R1", "R2", "R3"}
    assert len(res.classes) == 1 and 0.5 < res.scores[0] <= 1.0
    np.testing.assert_allclose(res.boxes, [[10, 10, 50, 50]])
    assert strategy.em_info["n_candidates"] == 1
