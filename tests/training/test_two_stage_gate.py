"""The two-stage gate on one film's scores (pure): rescaled by P(abnormal), dropped when
the classifier calls the film normal, "No finding" at P(normal)."""

from __future__ import annotations

import numpy as np
import pytest

from training.two_stage import detector_p_normal, gate


def test_boxes_are_rescaled_by_the_classifiers_abnormal_probability():
    g = gate(np.array([0.8, 0.4]), p_normal=0.25, normal_threshold=0.9)
    assert g.keep.tolist() == [True, True] and not g.called_normal
    assert g.scores == pytest.approx([0.6, 0.3]) and g.no_finding == 0.25


def test_a_film_called_normal_keeps_no_box():
    g = gate(np.array([0.95]), p_normal=0.9, normal_threshold=0.9)
    assert g.called_normal and g.keep.tolist() == [False] and g.no_finding == 0.9
    empty = gate(np.zeros(0), p_normal=0.99)
    assert empty.called_normal and len(empty.keep) == 0


def test_probabilities_outside_zero_one_are_clipped():
    assert gate(np.array([0.5]), p_normal=1.7).no_finding == 1.0
    assert gate(np.array([0.5]), p_normal=-0.2).scores.tolist() == [0.5]


def test_the_detector_alone_says_no_finding_from_its_best_box():
    assert detector_p_normal(np.array([0.2, 0.7])) == pytest.approx(0.3)
    assert detector_p_normal(np.zeros(0)) == 1.0
