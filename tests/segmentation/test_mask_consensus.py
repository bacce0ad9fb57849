"""Mask consensus (STAPLE, majority), agreement and the cardiothoracic ratio, against
masks whose truth is known exactly."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from annotations.consensus import masks as mc
from annotations.consensus.mask_agreement import dice, iou, pairwise, reader_vs_consensus
from annotations.errors import DomainError
from annotations.imaging.ctr import cardiothoracic_ratio
from annotations.imaging.synthetic.mask_readers import MaskReaderProfile, draw_mask, read_masks


def _ellipse(shape=(200, 240), centre=(120, 100), axes=(60, 40)) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    cv2.ellipse(m, centre, axes, 0, 0, 360, 1, -1)
    return m.astype(bool)


def test_staple_outvotes_a_leaking_reader_and_says_who_leaked():
    truth = _ellipse()
    rng = np.random.default_rng(3)
    panel = [MaskReaderProfile("A", 1.0), MaskReaderProfile("B", 1.2),
             MaskReaderProfile("C", 1.5, leak_rate=1.0, leak_size=0.6)]
    masks = {p.code: draw_mask(truth, p, rng) for p in panel}
    leaked = masks["C"] & ~truth
    assert leaked.sum() > 0.15 * truth.sum()  # the leak is real and large
    result = mc.build({"mask_method": "staple"}).merge(masks)
    assert dice(result.mask, truth) > dice(masks["C"], truth) + 0.05
    assert (result.mask & leaked).sum() < 0.05 * leaked.sum()
    assert min(result.specificity, key=result.specificity.get) == "C"
    assert result.probability is not None and result.probability.max() <= 1.0


def test_majority_needs_the_quorum_and_reports_rates_against_itself():
    a = np.zeros((10, 10), bool)
    a[2:8, 2:8] = True
    b = a.copy()
    b[2:8, 8] = True  # one column more
    c = np.zeros_like(a)  # missed
    maj = mc.build({"mask_method": "majority"}).merge({"a": a, "b": b, "c": c})
    assert (maj.mask == a).all()  # 2 of 3
    assert maj.sensitivity["c"] == 0.0 and maj.sensitivity["a"] == 1.0
    lenient = mc.build({"mask_method": "majority", "mask_quorum": 0.3}).merge(
        {"a": a, "b": b, "c": c})
    assert (lenient.mask == (a | b)).all()


def test_nobody_painted_gives_an_empty_consensus():
    empty = np.zeros((8, 8), bool)
    for method in ("staple", "majority"):
        assert not mc.build({"mask_method": method}).merge({"a": empty, "b": empty}).mask.any()


def test_bad_params_and_mismatched_masks_are_refused():
    with pytest.raises(DomainError, match="unknown mask consensus strategy"):
        mc.build({"mask_method": "vote"})
    with pytest.raises(DomainError, match="mask_quorum"):
        mc.build({"mask_method": "majority", "mask_quorum": 0})
    with pytest.raises(DomainError, match="unknown mask params"):
        mc.build({"mask_method": "staple", "mask_quorum": 0.5})
    with pytest.raises(DomainError, match="differ in shape"):
        mc.build({}).merge({"a": np.zeros((4, 4), bool), "b": np.zeros((4, 5), bool)})


def test_box_strategies_accept_mask_params_and_validate_them():
    from annotations.consensus import build

    build("wbf", {"mask_method": "majority", "mask_quorum": 0.6})
    with pytest.raises(DomainError):
        build("wbf", {"mask_method": "nope"})


def test_dice_iou_and_agreement_tables():
    a = np.zeros((4, 4), bool)
    a[:2] = True
    b = np.zeros((4, 4), bool)
    b[1:3] = True
    assert dice(a, b) == pytest.approx(0.5) and iou(a, b) == pytest.approx(1 / 3)
    assert dice(np.zeros((2, 2), bool), np.zeros((2, 2), bool)) == 1.0
    p = pairwise({"x": a, "y": b, "z": a})
    assert p["pairs"] == 3 and p["dice"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    assert pairwise({"x": a})["dice"] is None
    assert reader_vs_consensus({"x": a, "y": b}, a)["x"]["dice"] == 1.0


def test_ctr_of_known_geometry_and_of_an_enlarged_heart():
    shape = (300, 400)
    right, left, heart = (np.zeros(shape, bool) for _ in range(3))
    right[50:250, 50:190] = True  # lungs span columns 50..349: 300 px
    left[50:250, 210:350] = True
    heart[150:240, 125:275] = True  # 150 px
    got = cardiothoracic_ratio(heart, right, left)
    assert got.ratio == pytest.approx(150 / 300)
    assert got.thoracic.x0 == 50 and got.thoracic.x1 == 349 and got.cardiac.length == 150
    big = np.zeros(shape, bool)
    big[140:245, 95:305] = True
    assert cardiothoracic_ratio(big, right, left).ratio == pytest.approx(210 / 300)


def test_ctr_ignores_a_stray_speck_and_refuses_a_missing_structure():
    shape = (300, 400)
    right, left, heart = (np.zeros(shape, bool) for _ in range(3))
    right[50:250, 50:190] = True
    left[50:250, 210:350] = True
    heart[150:240, 125:275] = True
    speck = heart.copy()
    speck[100, 10] = True  # a brush's stray dot far left
    assert cardiothoracic_ratio(speck, right, left).ratio == pytest.approx(0.5)
    with pytest.raises(DomainError, match="needs the heart"):
        cardiothoracic_ratio(np.zeros(shape, bool), right, left)


def test_simulated_readers_miss_leak_and_wobble_as_profiled():
    truth = {"s": _ellipse()}
    rng = np.random.default_rng(0)
    careful, missing, leaking = (MaskReaderProfile("c", 0.5),
                                 MaskReaderProfile("m", 1.0, miss_rate=1.0),
                                 MaskReaderProfile("l", 0.5, leak_rate=1.0))
    got = read_masks(truth, [careful, missing, leaking], rng)
    assert dice(got["c"]["s"], truth["s"]) > 0.97
    assert not got["m"]["s"].any()
    assert (got["l"]["s"] & ~truth["s"]).sum() > (got["c"]["s"] & ~truth["s"]).sum() + 200


def test_ct_films_with_an_enlarged_heart_have_a_measurably_larger_ratio():
    """The CT-derived generator's exact masks: cardiomegaly (the heart dilated in the
    volume) raises the measured ratio well above every normal film's."""
    from annotations.imaging.synthetic import lesions as L
    from annotations.imaging.synthetic.ct_anatomy import HEART, LEFT_LUNG, RIGHT_LUNG, render_ct

    def ratio(findings, i):
        m = render_ct(256, 256, findings, np.random.default_rng([3, i])).masks
        return cardiothoracic_ratio(m[HEART], m[RIGHT_LUNG], m[LEFT_LUNG]).ratio

    normal = [ratio([], i) for i in range(3)]
    enlarged = [ratio([L.CARDIOMEGALY], i) for i in range(3)]
    assert all(0.4 < r < 0.6 for r in normal), normal
    assert min(enlarged) > max(normal) + 0.08, (normal, enlarged)
