"""Uncertainty scores on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.uncertainty import image_uncertainty


def test_confident_and_uniform_rows():
    confident = np.array([[1.0, 0.0, 0.0]])
    uniform = np.array([[1 / 3, 1 / 3, 1 / 3]])
    assert image_uncertainty(confident)["entropy_max"] == pytest.approx(0.0)
    assert image_uncertainty(confident)["least_confidence_max"] == pytest.approx(0.0)
    assert image_uncertainty(uniform)["entropy_max"] == pytest.approx(1.0)
    assert image_uncertainty(uniform)["least_confidence_max"] == pytest.approx(2 / 3)


def test_aggregations_over_detections():
    probs = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    h = -(2 * 0.5 * math.log(0.5)) / math.log(3)
    u = image_uncertainty(probs)
    assert u["entropy_max"] == pytest.approx(h)
    assert u["entropy_mean"] == pytest.approx(h / 2)
    assert u["entropy_sum"] == pytest.approx(h)
    assert u["least_confidence_sum"] == pytest.approx(0.5)
    assert u["detections"] == 2


def test_no_detections_scores_zero():
    u = image_uncertainty(np.zeros((0, 3)))
    assert u["entropy_max"] == 0.0 and u["detections"] == 0
