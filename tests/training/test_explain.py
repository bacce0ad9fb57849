"""Grad-CAM on the image classifier means something: on films whose lesion moves from
film to film, the map's peak falls inside the lesion's true box far above the pointing
game's random baseline, and the thresholded map's box overlaps the truth."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.training.films import iou
from training.classifier import Classifier, classifier_config, train_classifier
from training.explain import cam_box, classifier_cams, pointing_baseline, pointing_hit

SIZE = 128


def moving_film(seed: int, lesion: bool):
    """Noise with a bright bar on every film (a distractor: brightness alone does not
    find the lesion) and, on lesion films, a bright square of random size and place
    away from the bar."""
    rng = np.random.default_rng(seed)
    img = np.clip(rng.normal(60, 20, (SIZE, SIZE)), 1, 254).astype(np.uint8)
    bar_y = int(rng.integers(4, SIZE - 10))
    img[bar_y:bar_y + 6, 10:SIZE - 10] = 200
    if not lesion:
        return img, None
    side = int(rng.integers(22, 32))
    while True:
        x, y = (int(v) for v in rng.integers(4, SIZE - side - 4, size=2))
        if y > bar_y + 8 or y + side < bar_y - 2:
            break
    img[y:y + side, x:x + side] = 200
    return img, np.array([x, y, x + side, y + side], dtype=np.float64)


@pytest.fixture(scope="module")
def classifier():
    torch.set_num_threads(1)
    films = [moving_film(100 + i, lesion=i % 2 == 0) for i in range(40)]
    y = np.array([[box is not None, box is None] for _, box in films], dtype=np.float32)
    cfg = classifier_config(["Nodule/Mass", "No finding"], preset="tiny", input_size=SIZE)
    model = train_classifier(cfg, [f for f, _ in films], y, max_iter=150, batch_size=8, seed=1)
    return Classifier(model, cfg)


def test_the_maps_peak_points_at_the_lesion(classifier):
    films = [moving_film(900 + i, lesion=True) for i in range(16)]
    maps = classifier_cams(classifier, [f for f, _ in films], "Nodule/Mass")
    assert all(m.shape == (SIZE, SIZE) and 0.0 <= m.min() and m.max() <= 1.0 for m in maps)
    hits = np.mean([pointing_hit(m, box) for m, (_, box) in zip(maps, films, strict=True)])
    chance = np.mean([pointing_baseline(box, (SIZE, SIZE)) for _, box in films])
    # an untrained model points at the lesion 7 times in 16 here (at the bar otherwise)
    assert chance < 0.1 and hits >= 0.8, (hits, chance)
    overlap = [iou(cam_box(m), box) for m, (_, box) in zip(maps, films, strict=True)]
    assert np.median(overlap) > 0.25, overlap


def test_pointing_and_thresholding_on_known_maps():
    heat = np.zeros((20, 30), dtype=np.float32)
    heat[5:9, 10:16] = 0.8
    heat[6, 12] = 1.0
    assert pointing_hit(heat, [10, 5, 16, 9]) and not pointing_hit(heat, [0, 0, 5, 5])
    assert cam_box(heat).tolist() == [10, 5, 16, 9]
    assert pointing_baseline([0, 0, 15, 10], (20, 30)) == pytest.approx(0.25)


def test_detector_box_explanation_looks_at_the_box(trained_version):
    from tests.training.films import TRUTH, film
    from training.detector import Detector
    from training.explain import detector_box_cam

    detector = Detector.from_dir(trained_version.directory,
                                 expected_sha256=trained_version.sha256)
    image = film(7)
    det = detector.predict([image])[0]
    best = int(np.argmax(det.scores))
    assert iou(det.boxes[best], TRUTH) > 0.5
    heat = detector_box_cam(detector, image, det.boxes[best], int(det.classes[best]))
    assert heat.shape == image.shape and 0.0 <= heat.min() and heat.max() == pytest.approx(1.0)
    x1, y1, x2, y2 = (int(v) for v in TRUTH)
    inside = heat[y1:y2, x1:x2].mean()
    outside = (heat.sum() - heat[y1:y2, x1:x2].sum()) / (heat.size - (y2 - y1) * (x2 - x1))
    assert inside > 2 * outside, (inside, outside)
    assert pointing_hit(heat, det.boxes[best])  # its peak lies in the box it explains
