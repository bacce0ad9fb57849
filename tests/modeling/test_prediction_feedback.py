"""Feedback classification on constructed cases, one per outcome."""

from __future__ import annotations

import numpy as np

from annotations.prediction_feedback import classify

B = np.array([[100.0, 100, 200, 200]])


def _outcomes(pred, pcls, reader, rcls):
    return [(o.outcome, o.predicted_index, o.reader_index)
            for o in classify(np.array(pred).reshape(-1, 4), pcls,
                              np.array(reader).reshape(-1, 4), rcls)]


def test_accepted_same_class_high_iou():
    assert _outcomes(B, [3], B + [2, 2, 2, 2], [3]) == [("accepted", 0, 0)]


def test_moved_or_resized_is_adjusted():
    moved = B + [40, 0, 40, 0]  # IoU 0.43
    assert _outcomes(B, [3], moved, [3]) == [("adjusted", 0, 0)]


def test_relabeled_is_adjusted_not_rejected_plus_missed():
    assert _outcomes(B, [3], B, [8]) == [("adjusted", 0, 0)]


def test_deleted_is_rejected():
    assert _outcomes(B, [3], np.zeros((0, 4)), []) == [("rejected", 0, None)]


def test_reader_box_without_prediction_is_missed():
    far = np.array([[400.0, 400, 450, 450]])
    assert _outcomes(B, [3], np.concatenate([B, far]), [3, 8]) == [
        ("accepted", 0, 0), ("missed", None, 1)]


def test_one_to_one_optimal_matching():
    preds = np.array([[100.0, 100, 200, 200], [105.0, 100, 205, 200]])
    reader = np.array([[104.0, 100, 204, 200]])
    out = _outcomes(preds, [3, 3], reader, [3])
    assert sorted(o[0] for o in out) == ["accepted", "rejected"]
    assert ("accepted", 1, 0) in out  # the closer prediction wins the reader's box


def test_nothing_predicted_nothing_drawn():
    assert _outcomes(np.zeros((0, 4)), [], np.zeros((0, 4)), []) == []
