import warnings

import numpy as np
import pytest
from ensemble_boxes import weighted_boxes_fusion

from annotations.consensus import build
from annotations.consensus.flat import FlatReads
from annotations.consensus.wbf import reference_inputs
from annotations.consensus.wbf_core import CONF_TYPES, fuse
from annotations.errors import DomainError
from tests.consensus.helpers import image, read


def _random_case(rng):
    n_models = int(rng.integers(1, 11))
    centers = rng.random((int(rng.integers(1, 6)), 2))
    boxes, scores, labels = [], [], []
    for _ in range(n_models):
        n = int(rng.integers(0, 12))
        c = centers[rng.integers(0, len(centers), n)] + rng.normal(0, 0.03, (n, 2))
        wh = rng.uniform(0.02, 0.3, (n, 2))
        b = np.concatenate([c - wh / 2, c + wh / 2], axis=1)  # some fall outside [0, 1]
        if n and rng.random() < 0.2:
            b[0] = b[0][[2, 1, 0, 3]]  # inverted corners
        boxes.append(b)
        tied = rng.random() < 0.7  # few distinct scores: many ties
        scores.append(rng.choice([0.3, 0.5, 0.9, 1.0], n) if tied else rng.random(n))
        labels.append(rng.integers(0, 3, n))
    weights = list(rng.choice([1.0, 2.0, 0.5, 3.0], n_models)) if rng.random() < 0.7 else None
    return boxes, scores, labels, weights


@pytest.mark.parametrize("conf_type", CONF_TYPES)
def test_matches_ensemble_boxes_on_random_cases(conf_type):
    warnings.simplefilter("ignore")
    rng = np.random.default_rng(hash(conf_type) % 2**32)
    for _ in range(80):
        cases = [_random_case(rng) for _ in range(6)]
        thr, skip = float(rng.choice([0.3, 0.55])), float(rng.choice([0.0, 0.4]))
        flat = {k: [] for k in ("img", "model", "lab", "box", "score")}
        weights, starts = [], [0]
        for i, (bl, sl, ll, w) in enumerate(cases):
            for t in range(len(bl)):
                flat["img"] += [i] * len(bl[t])
                flat["model"] += [t] * len(bl[t])
                flat["lab"] += list(ll[t])
                flat["box"] += list(bl[t])
                flat["score"] += list(sl[t])
            weights += w if w is not None else [1.0] * len(bl)
            starts.append(len(weights))
        ours = fuse(
            np.array(flat["img"], int), np.array(flat["model"], int), np.array(flat["lab"], int),
            np.array(flat["box"]).reshape(-1, 4), np.array(flat["score"]),
            np.array(weights), np.array(starts), thr, skip, conf_type,
        )
        for i, (bl, sl, ll, w) in enumerate(cases):
            rb, rs, rl = weighted_boxes_fusion(
                bl, sl, ll, weights=w, iou_thr=thr, skip_box_thr=skip, conf_type=conf_type
            )
            sel = ours.image == i
            assert sel.sum() == len(rb)
            np.testing.assert_allclose(ours.boxes[sel], rb, rtol=0, atol=1e-9)
            np.testing.assert_allclose(ours.scores[sel], rs, rtol=0, atol=1e-9)
            np.testing.assert_array_equal(ours.labels[sel], rl)


@pytest.mark.parametrize("conf_type", CONF_TYPES)
def test_matches_ensemble_boxes_on_vinbigdata_slice(vinbigdata_images, conf_type):
    warnings.simplefilter("ignore")
    images = vinbigdata_images[:1000]
    flat = FlatReads.build(images)
    weights = {"R8": 2.0, "R9": 0.5} if conf_type != "avg" else None
    params = {"iou_thr": 0.4, "conf_type": conf_type, "weights": weights or {}}
    fused = build("wbf", params).fuse_flat(flat)
    starts = np.searchsorted(fused.image, np.arange(flat.n_images + 1))
    for i, (bl, sl, ll, w) in enumerate(reference_inputs(flat, weights)):
        rb, rs, rl = weighted_boxes_fusion(bl, sl, ll, weights=w, iou_thr=0.4, conf_type=conf_type)
        lo, hi = starts[i], starts[i + 1]
        assert hi - lo == len(rb)
        np.testing.assert_allclose(fused.boxes[lo:hi], rb, rtol=0, atol=1e-9)
        np.testing.assert_allclose(fused.scores[lo:hi], rs, rtol=0, atol=1e-9)


def test_wbf_hand_case_pixels_support_and_labels():
    # R1 and R2 agree on one lesion, R3 says No finding
    im = image(
        "a",
        read("R1", (0, 10, 10, 50, 50)),
        read("R2", (0, 14, 10, 54, 50)),
        read("R3"),
    )
    res = build("wbf", {"iou_thr": 0.5}).run([im])["a"]
    np.testing.assert_allclose(res.boxes, [[12, 10, 52, 50]], atol=1e-4)  # float32 fusion
    assert res.scores[0] == pytest.approx(2 / 3)  # avg: 1.0 * min(3, 2) / 3
    assert res.support == [("R1", "R2")]
    assert res.image_labels == frozenset()
    assert res.meta["no_finding_votes"] == 1


def test_wbf_per_class_thresholds():
    # IoU of the two boxes is 0.6: fused for class 0 (thr 0.4), kept apart for class 1 (0.7)
    im = image(
        "a",
        read("R1", (0, 0, 0, 80, 50), (1, 0, 0, 80, 50)),
        read("R2", (0, 0, 0, 48, 50), (1, 0, 0, 48, 50)),
    )
    res = build("wbf", {"iou_thr": {"1": 0.7}, "default_iou_thr": 0.4}).run([im])["a"]
    assert sorted(res.classes.tolist()) == [0, 1, 1]


def test_wbf_invalid_params():
    for bad in ({"conf_type": "median"}, {"iou_thr": 1.5}, {"weights": {"R1": 0}}, {"x": 1}):
        with pytest.raises(DomainError) as err:
            build("wbf", bad)
        assert err.value.code == "invalid_params"
