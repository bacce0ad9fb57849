"""The platform's one IoU (annotations.geometry): values, shapes and the zero-area rule."""

from __future__ import annotations

import numpy as np
import pytest

from annotations.geometry import as_boxes, box_area, iou, iou_matrix, paired_iou

UNIT = [0.0, 0.0, 10.0, 10.0]


def _scalar_iou(a, b) -> float:
    """Independent oracle: the textbook formula, one pair at a time."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    area = lambda r: max(0.0, r[2] - r[0]) * max(0.0, r[3] - r[1])  # noqa: E731
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


def test_iou_matrix_matches_hand_computed_values():
    a = np.array([UNIT])
    b = np.array([[0, 0, 10, 5], [5, 5, 15, 15], [20, 20, 30, 30], [0, 0, 10, 10]])
    np.testing.assert_allclose(iou_matrix(a, b), [[0.5, 25 / 175, 0.0, 1.0]])


def test_two_identical_zero_area_boxes_have_iou_zero():
    point = [5.0, 5.0, 5.0, 5.0]
    line = [2.0, 5.0, 8.0, 5.0]
    assert iou_matrix([point], [point])[0, 0] == 0.0
    assert iou_matrix([line], [line])[0, 0] == 0.0


def test_two_different_zero_area_boxes_have_iou_zero():
    assert iou_matrix([[5, 5, 5, 5]], [[2, 5, 8, 5]])[0, 0] == 0.0


def test_zero_area_box_inside_a_real_box_has_iou_zero():
    assert iou_matrix([[5, 5, 5, 5]], [UNIT])[0, 0] == 0.0
    assert iou_matrix([UNIT], [[2, 5, 8, 5]])[0, 0] == 0.0


def test_boxes_touching_at_an_edge_or_corner_do_not_overlap():
    right_neighbour = [10.0, 0.0, 20.0, 10.0]
    corner_neighbour = [10.0, 10.0, 20.0, 20.0]
    np.testing.assert_array_equal(iou_matrix([UNIT], [right_neighbour, corner_neighbour]),
                                  [[0.0, 0.0]])


def test_inverted_box_counts_as_zero_area_not_negative():
    inverted = [10.0, 10.0, 0.0, 0.0]
    assert box_area(np.array(inverted)) == 0.0
    assert iou_matrix([inverted], [UNIT])[0, 0] == 0.0


def test_results_are_never_nan_and_stay_in_unit_interval():
    rng = np.random.default_rng(0)
    lo = rng.integers(0, 20, (300, 2)).astype(float)
    boxes = np.concatenate([lo, lo + rng.integers(0, 6, (300, 2))], axis=1)  # many degenerate
    m = iou_matrix(boxes, boxes)
    assert np.isfinite(m).all() and (m >= 0).all() and (m <= 1).all()


def test_matches_scalar_oracle_on_random_boxes_with_degenerate_and_touching_ones():
    rng = np.random.default_rng(1)
    lo = rng.integers(0, 30, (120, 2)).astype(float)
    boxes = np.concatenate([lo, lo + rng.integers(0, 12, (120, 2))], axis=1)
    expected = [[_scalar_iou(a, b) for b in boxes] for a in boxes]
    np.testing.assert_allclose(iou_matrix(boxes, boxes), expected, rtol=0, atol=1e-15)


def test_paired_and_matrix_forms_agree_elementwise():
    rng = np.random.default_rng(2)
    a = np.sort(rng.uniform(0, 100, (40, 2, 2)), axis=1).transpose(0, 2, 1).reshape(-1, 4)
    b = np.sort(rng.uniform(0, 100, (40, 2, 2)), axis=1).transpose(0, 2, 1).reshape(-1, 4)
    np.testing.assert_array_equal(paired_iou(a, b), np.diag(iou_matrix(a, b)))
    np.testing.assert_array_equal(iou(a[:, None], b[None]), iou_matrix(a, b))


def test_empty_inputs_give_empty_results_of_the_right_shape():
    assert iou_matrix(np.zeros((0, 4)), [UNIT]).shape == (0, 1)
    assert iou_matrix([UNIT], []).shape == (1, 0)
    assert paired_iou([], []).shape == (0,)


def test_malformed_shapes_are_refused():
    with pytest.raises(ValueError, match="must be"):
        as_boxes([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="equal lengths"):
        paired_iou([UNIT], [UNIT, UNIT])


def test_every_caller_uses_the_one_rule_for_degenerate_boxes():
    """Consensus agreement, metrics, AL and feedback see a zero-area box the same way."""
    from annotations.imaging.synthetic.lesions import Box
    from annotations.prediction_feedback import classify
    from training.active_learning import _agreement
    from training.metrics import map_at_iou

    point = np.array([[5.0, 5.0, 5.0, 5.0]])
    # metrics: a zero-area detection cannot match an identical zero-area ground truth
    result = map_at_iou({"a": (point, [0])}, {"a": (point, [0.9], [0])}, iou=0.4)
    assert result["ap"][0] == 0.0
    # AL: identical degenerate predictions do not agree
    one = (point, np.array([1.0]), np.array([0]))
    assert _agreement(one, one) == 0.0
    # feedback: a degenerate pre-label the reader kept is not matched
    assert [o.outcome for o in classify(point, [0], point, [0])] == ["rejected", "missed"]
    # synthetic lesions
    assert Box("Nodule/Mass", 5, 5, 5, 5).iou(Box("Nodule/Mass", 5, 5, 5, 5)) == 0.0
