"""Detection metrics on hand-computed cases, and against independent implementations."""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest

from training.metrics import (
    average_precision_voc,
    coco_map,
    froc,
    map_at_iou,
    with_no_finding,
)

LESION = np.array([[10.0, 10.0, 50.0, 50.0]])
FAR = np.array([[200.0, 200.0, 240.0, 240.0]])


def _gt(boxes, classes):
    return (np.asarray(boxes, float).reshape(-1, 4), np.asarray(classes, int))


def _pred(boxes, scores, classes):
    return (
        np.asarray(boxes, float).reshape(-1, 4),
        np.asarray(scores, float),
        np.asarray(classes, int),
    )


def _random_case(rng: np.random.Generator, n_images=6, n_classes=3):
    """GT boxes plus jittered copies (likely TPs), duplicates and random boxes (FPs)."""
    gt, preds = {}, {}
    for i in range(n_images):
        n = int(rng.integers(0, 5)) if i else 0  # image 0: no ground truth
        xy = rng.uniform(0, 80, (n, 2))
        wh = rng.uniform(5, 30, (n, 2))
        boxes = np.hstack([xy, xy + wh])
        classes = rng.integers(0, n_classes, n)
        gt[f"img{i}"] = (boxes, classes)
        keep = rng.random(n) < 0.8
        jitter = boxes[keep] + rng.normal(0, 3, (int(keep.sum()), 4))
        dup = boxes[keep][: int(rng.integers(0, 2))] + rng.normal(0, 2, (1, 4))
        m = int(rng.integers(0, 4))
        xy = rng.uniform(0, 80, (m, 2))
        noise = np.hstack([xy, xy + rng.uniform(5, 30, (m, 2))])
        p_boxes = np.vstack([jitter, dup, noise])
        p_classes = np.concatenate(
            [classes[keep], classes[keep][: len(dup)], rng.integers(0, n_classes, m)]
        )
        # Flip some classes (class confusions), round scores to create ties.
        flip = rng.random(len(p_classes)) < 0.1
        p_classes[flip] = rng.integers(0, n_classes, int(flip.sum()))
        scores = np.round(rng.random(len(p_boxes)), 1)
        preds[f"img{i}"] = (p_boxes, scores, p_classes)
    preds["extra"] = _pred(FAR, [0.55], [0])  # an image only in predictions
    return gt, preds


# ------------------------------------------------------------------ VOC AP function


def test_average_precision_hand_computed():
    # Ranked: TP FP TP TP FP TP, 5 ground truths.
    #   precision 1, 1/2, 2/3, 3/4, 3/5, 4/6 ; recall .2, .2, .4, .6, .6, .8
    #   envelope at the recall steps .2 -> 1, .4 -> 3/4, .6 -> 3/4, .8 -> 2/3
    #   AP = .2 * (1 + 3/4 + 3/4 + 2/3) = 0.6333...
    conf = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    tp = np.array([1, 0, 1, 1, 0, 1], bool)
    expected = 0.2 * (1 + 0.75 + 0.75 + 2 / 3)
    assert average_precision_voc(tp, conf, 5) == pytest.approx(expected)
    perm = np.random.default_rng(0).permutation(6)  # input order is irrelevant
    assert average_precision_voc(tp[perm], conf[perm], 5) == pytest.approx(expected)


def test_average_precision_edge_cases():
    assert average_precision_voc([1, 1], [0.9, 0.1], 2) == 1.0  # perfect
    assert average_precision_voc([], [], 3) == 0.0  # no detections
    assert average_precision_voc([0, 0], [0.9, 0.8], 3) == 0.0  # all false positives
    assert math.isnan(average_precision_voc([0], [0.9], 0))  # undefined without GT
    assert math.isnan(average_precision_voc([], [], 0))
    with pytest.raises(ValueError):
        average_precision_voc([1, 1], [0.5, 0.4], 1)


def test_average_precision_ties_keep_input_order():
    # Equal scores: stable sort, the first listed is ranked first.
    assert average_precision_voc([0, 1], [0.5, 0.5], 1) == pytest.approx(0.5)
    assert average_precision_voc([1, 0], [0.5, 0.5], 1) == pytest.approx(1.0)


# ------------------------------------------------------------------------- mAP


def test_perfect_predictions_score_one():
    rng = np.random.default_rng(1)
    gt, preds = {}, {}
    for i in range(4):
        xy = rng.uniform(0, 100, (3, 2))
        boxes = np.hstack([xy, xy + 20])
        classes = np.array([0, 1, i % 2])
        gt[i] = (boxes, classes)
        preds[i] = (boxes, rng.random(3), classes)
    result = map_at_iou(gt, preds)
    assert result["map"] == 1.0
    assert result["ap"] == {0: 1.0, 1: 1.0}
    coco = coco_map(gt, preds)
    assert coco["map"] == pytest.approx(1.0) and coco["ap50"] == pytest.approx(1.0)
    assert froc(gt, preds)["score"] == 1.0


def test_empty_predictions_score_zero():
    gt = {"a": _gt(LESION, [0]), "b": _gt(FAR, [1])}
    result = map_at_iou(gt, {})
    assert result["map"] == 0.0 and result["ap"] == {0: 0.0, 1: 0.0}
    assert result["n_pred"] == {0: 0, 1: 0}
    assert coco_map(gt, {})["map"] == 0.0
    f = froc(gt, {})
    assert f["score"] == 0.0 and np.all(f["sensitivity"] == 0)


def test_all_false_positives_score_zero():
    gt = {"a": _gt(LESION, [0])}
    preds = {"a": _pred(np.vstack([FAR, LESION]), [0.9, 0.8], [0, 1])}  # miss, wrong class
    result = map_at_iou(gt, preds)
    assert result["ap"][0] == 0.0
    assert math.isnan(result["ap"][1])  # class 1 has no ground truth: excluded
    assert result["map"] == 0.0
    assert coco_map(gt, preds)["map"] == 0.0
    assert froc(gt, preds)["score"] == 0.0


def test_no_ground_truth_at_all_is_nan():
    preds = {"a": _pred(LESION, [0.9], [0])}
    assert math.isnan(map_at_iou({}, preds)["map"])
    assert math.isnan(coco_map({}, preds)["map"])
    assert math.isnan(froc({}, preds)["score"])
    assert math.isnan(map_at_iou({}, {})["map"])


def test_false_positives_on_images_without_ground_truth_lower_precision():
    gt = {"a": _gt(LESION, [0]), "normal": _gt(np.zeros((0, 4)), [])}
    preds = {"a": _pred(LESION, [0.9], [0])}
    assert map_at_iou(gt, preds)["map"] == 1.0
    # A higher-scoring FP on a normal film (in gt with no boxes, or only in preds):
    # ranked TP after one FP -> precision 1/2 at recall 1 -> AP 0.5.
    for image in ("normal", "unlisted"):
        both = dict(preds, **{image: _pred(FAR, [0.95], [0])})
        assert map_at_iou(gt, both)["map"] == pytest.approx(0.5)
    # A lower-scoring one does not lower the (all-point) AP.
    low = dict(preds, normal=_pred(FAR, [0.5], [0]))
    assert map_at_iou(gt, low)["map"] == 1.0


def test_iou_threshold_edge():
    gt = {"a": _gt([[0, 0, 10, 10]], [0])}
    preds = {"a": _pred([[0, 0, 10, 4.5]], [0.9], [0])}  # IoU 0.45
    assert map_at_iou(gt, preds, iou=0.4)["map"] == 1.0
    assert map_at_iou(gt, preds, iou=0.5)["map"] == 0.0
    exact = {"a": _pred([[0, 0, 10, 4]], [0.9], [0])}  # IoU exactly 0.4 matches (>=)
    assert map_at_iou(gt, exact, iou=0.4)["map"] == 1.0
    assert froc(gt, exact, iou=0.4)["sensitivity"][0] == 1.0


def test_duplicate_detection_is_false_positive():
    gt = {"a": _gt(LESION, [0])}
    preds = {"a": _pred(np.vstack([LESION, LESION + 1]), [0.6, 0.9], [0, 0])}
    # The 0.9 one takes the lesion, the 0.6 duplicate is a FP after it: AP stays 1.
    assert map_at_iou(gt, preds)["map"] == 1.0
    # Two lesions: TP, FP (duplicate), and the second lesion missed -> AP 0.5.
    gt2 = {"a": _gt(np.vstack([LESION, FAR]), [0, 0])}
    assert map_at_iou(gt2, preds)["map"] == pytest.approx(0.5)


def test_voc_matching_versus_best_unmatched():
    # Two overlapping lesions; the second detection overlaps lesion 1 most (IoU .67,
    # taken) and lesion 2 at IoU .43.  VOC: FP.  FROC ("unmatched GT"): TP.
    gt = {"a": _gt([[0, 0, 10, 10], [6, 0, 16, 10]], [0, 0])}
    preds = {"a": _pred([[0, 0, 10, 10], [2, 0, 12, 10]], [0.9, 0.8], [0, 0])}
    assert map_at_iou(gt, preds, iou=0.4)["map"] == pytest.approx(0.5)
    assert froc(gt, preds, iou=0.4)["sensitivity"][0] == 1.0


def test_ties_are_broken_by_input_order():
    # Same score: a FP on image "x" and a TP on image "y".  Images are ranked in gt
    # order, so listing "x" first ranks the FP first.
    x = _gt(np.zeros((0, 4)), [])
    y = _gt(LESION, [0])
    preds = {"x": _pred(FAR, [0.5], [0]), "y": _pred(LESION, [0.5], [0])}
    assert map_at_iou({"x": x, "y": y}, preds)["map"] == pytest.approx(0.5)
    assert map_at_iou({"y": y, "x": x}, preds)["map"] == pytest.approx(1.0)
    # Within an image: of two tied detections of one lesion, the first row gets it.
    gt = {"a": _gt(LESION, [0])}
    tied = {"a": _pred(np.vstack([FAR, LESION]), [0.7, 0.7], [0, 0])}
    assert map_at_iou(gt, tied)["map"] == pytest.approx(0.5)
    assert map_at_iou(gt, {"a": _pred(np.vstack([LESION, FAR]), [0.7, 0.7], [0, 0])})[
        "map"
    ] == pytest.approx(1.0)


def test_classes_argument():
    gt = {"a": _gt(np.vstack([LESION, FAR]), [0, 1])}
    preds = {"a": _pred(np.vstack([LESION, FAR]), [0.9, 0.1], [0, 2])}
    result = map_at_iou(gt, preds, classes=[0, 1, 5])
    assert list(result["ap"]) == [0, 1, 5]
    assert result["ap"][0] == 1.0 and result["ap"][1] == 0.0 and math.isnan(result["ap"][5])
    assert result["map"] == pytest.approx(0.5)


def test_no_finding_class():
    nf = 14
    gt = {
        "abnormal": _gt(LESION, [0]),
        "normal": _gt(np.zeros((0, 4)), []),
        "normal_marked": _gt([[0, 0, 512, 512]], [nf]),  # explicit "No finding" row
    }
    preds = {
        "abnormal": _pred(np.vstack([LESION, [[0, 0, 1, 1]]]), [0.9, 0.2], [0, nf]),
        "normal": _pred([[0, 0, 1, 1]], [0.8], [nf]),
        "normal_marked": _pred([[3, 4, 100, 90]], [0.1], [nf]),  # box is ignored
    }
    # Class 14: 0.8 TP, 0.2 FP (abnormal film), 0.1 TP; 2 normal films.
    #   precision 1, 1/2, 2/3 ; recall .5, .5, 1 -> AP = .5 * 1 + .5 * 2/3
    result = map_at_iou(gt, preds, no_finding_class=nf)
    assert result["ap"][nf] == pytest.approx(0.5 + 1 / 3)
    assert result["n_gt"] == {0: 1, nf: 2}
    assert result["map"] == pytest.approx((1.0 + 0.5 + 1 / 3) / 2)
    # Added even when not listed in classes.
    assert nf in map_at_iou(gt, preds, classes=[0], no_finding_class=nf)["ap"]
    # The transformation itself.
    g, p = with_no_finding(gt, preds, nf)
    np.testing.assert_array_equal(g["normal"][0], [[0, 0, 1, 1]])
    np.testing.assert_array_equal(g["normal_marked"][0], [[0, 0, 1, 1]])
    assert list(g["abnormal"][1]) == [0]
    np.testing.assert_array_equal(p["normal_marked"][0], [[0, 0, 1, 1]])
    np.testing.assert_array_equal(p["abnormal"][0][0], LESION[0])


# ----------------------------------------------------------------------- COCO


def test_coco_ap50_differs_from_voc_all_point():
    # One film, 3 lesions, ranked TP FP TP FP TP (IoU 1 or 0, so every IoU threshold
    # gives the same result).  Precision at the TPs: 1, 2/3, 3/5.
    # VOC all-point: (1 + 2/3 + 3/5) / 3.
    # COCO 101-point: recall thresholds 0..0.33 (34) -> 1, 0.34..0.66 (33) -> 2/3,
    # 0.67..1 (34) -> 3/5.
    lesions = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]], float)
    misses = np.array([[0, 50, 10, 60], [20, 50, 30, 60]], float)
    boxes = np.vstack([lesions[0], misses[0], lesions[1], misses[1], lesions[2]])
    gt = {"a": _gt(lesions, [0, 0, 0])}
    preds = {"a": _pred(boxes, [0.9, 0.8, 0.7, 0.6, 0.5], [0] * 5)}
    voc = (1 + 2 / 3 + 3 / 5) / 3
    coco = (34 * 1 + 33 * 2 / 3 + 34 * 3 / 5) / 101
    assert map_at_iou(gt, preds, iou=0.5)["map"] == pytest.approx(voc)
    result = coco_map(gt, preds)
    assert result["ap50"] == pytest.approx(coco)
    assert result["map"] == pytest.approx(coco) and result["ap75"] == pytest.approx(coco)
    assert result["ap"][0] == pytest.approx(coco)
    assert abs(coco - voc) > 1e-4


def _pycocotools_direct(gt, preds, tmp_path):
    """The textbook route: a JSON ground-truth file and ``loadRes`` of a result list."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    names = list(gt) + [i for i in preds if i not in gt]
    image_ids = {name: k + 1 for k, name in enumerate(names)}
    anns, results = [], []
    for name, (boxes, classes) in gt.items():
        for (x0, y0, x1, y1), c in zip(boxes, classes, strict=True):
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_ids[name],
                    "category_id": int(c),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                }
            )
    for name, (boxes, scores, classes) in preds.items():
        for (x0, y0, x1, y1), s, c in zip(boxes, scores, classes, strict=True):
            results.append(
                {
                    "image_id": image_ids[name],
                    "category_id": int(c),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "score": float(s),
                }
            )
    cats = sorted(
        {int(c) for _, cl in gt.values() for c in cl} | {r["category_id"] for r in results}
    )
    path = tmp_path / "gt.json"
    dataset = {
        "images": [{"id": i} for i in image_ids.values()],
        "annotations": anns,
        "categories": [{"id": c} for c in cats],
    }
    path.write_text(json.dumps(dataset))
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(path))
        coco_dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    per_class = {}
    for k, c in enumerate(ev.params.catIds):
        p = ev.eval["precision"][:, :, k, 0, -1]
        per_class[c] = float(p[p > -1].mean()) if (p > -1).any() else math.nan
    return ev.stats, per_class


@pytest.mark.parametrize("seed", range(6))
def test_coco_map_matches_pycocotools_directly(seed, tmp_path):
    gt, preds = _random_case(np.random.default_rng(seed))
    stats, per_class = _pycocotools_direct(gt, preds, tmp_path)
    ours = coco_map(gt, preds)
    assert ours["map"] == pytest.approx(stats[0])
    assert ours["ap50"] == pytest.approx(stats[1])
    assert ours["ap75"] == pytest.approx(stats[2])
    assert ours["ap"].keys() == per_class.keys()
    for c, value in per_class.items():
        if math.isnan(value):
            assert math.isnan(ours["ap"][c])
        else:
            assert ours["ap"][c] == pytest.approx(value)


# -------------------------------------------- VOC mAP against a brute-force version


def _iou(a, b):
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _brute_force_voc_map(gt, preds, iou):
    """Loops only: VOC matching, then AP = sum over TPs of (1/n_gt) * max precision
    at any rank at or after that TP (the precision envelope, each TP a recall step)."""
    names = list(gt) + [i for i in preds if i not in gt]
    classes = sorted(
        {int(c) for _, cl in gt.values() for c in cl}
        | {int(c) for _, _, cl in preds.values() for c in cl}
    )
    aps = {}
    for c in classes:
        n_gt = sum(int(k) == c for name in gt for k in gt[name][1])
        dets = []  # (score, sequence number, tp)
        for name in names:
            g_boxes = [b for b, k in zip(*gt.get(name, ([], [])), strict=True) if k == c]
            if name not in preds:
                continue
            rows = [
                (s, j, b) for j, (b, s, k) in enumerate(zip(*preds[name], strict=True)) if k == c
            ]
            rows.sort(key=lambda r: (-r[0], r[1]))
            used = [False] * len(g_boxes)
            for s, _, b in rows:
                best, best_iou = -1, -1.0
                for j, gb in enumerate(g_boxes):
                    v = _iou(b, gb)
                    if v > best_iou:
                        best, best_iou = j, v
                hit = best >= 0 and best_iou >= iou and not used[best]
                if hit:
                    used[best] = True
                dets.append((s, len(dets), hit))
        if n_gt == 0:
            continue
        dets.sort(key=lambda d: (-d[0], d[1]))
        precisions, tp = [], 0
        for rank, (_, _, hit) in enumerate(dets, start=1):
            tp += hit
            precisions.append(tp / rank)
        ap = 0.0
        for k, (_, _, hit) in enumerate(dets):
            if hit:
                ap += max(precisions[k:]) / n_gt
        aps[c] = ap
    return aps


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("iou", [0.4, 0.5])
def test_voc_map_matches_brute_force(seed, iou):
    gt, preds = _random_case(np.random.default_rng(100 + seed))
    expected = _brute_force_voc_map(gt, preds, iou)
    result = map_at_iou(gt, preds, iou=iou)
    for c, ap in result["ap"].items():
        if c in expected:
            assert ap == pytest.approx(expected[c])
        else:
            assert math.isnan(ap)
    if expected:
        assert result["map"] == pytest.approx(np.mean(list(expected.values())))


# ------------------------------------------------------------------------- FROC


def _froc_case():
    # 4 images, 3 lesions.  Ranked detections (score, outcome):
    #   .9 TP (a, lesion 1)   .8 FP (b, class 0 on a class-1 lesion)   .7 FP (c, normal)
    #   .6 FP (a)   .5 TP (b, class 1)   .4 FP (d, only in preds)   .3 TP (a, lesion 2)
    # FP/image: 0, .25, .5, .75, .75, 1, 1 ; sensitivity 1/3 x4, 2/3, 2/3, 1
    lesion2 = np.array([[100.0, 100.0, 140.0, 140.0]])
    gt = {
        "a": _gt(np.vstack([LESION, lesion2]), [0, 0]),
        "b": _gt(LESION, [1]),
        "c": _gt(np.zeros((0, 4)), []),
    }
    preds = {
        "a": _pred(np.vstack([LESION, FAR, lesion2]), [0.9, 0.6, 0.3], [0, 0, 0]),
        "b": _pred(np.vstack([LESION, LESION]), [0.8, 0.5], [0, 1]),
        "c": _pred(LESION, [0.7], [0]),
        "d": _pred(LESION, [0.4], [0]),
    }
    return gt, preds


def test_froc_hand_computed():
    gt, preds = _froc_case()
    result = froc(gt, preds)
    assert result["fps_per_image"] == (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
    np.testing.assert_allclose(result["sensitivity"], [1 / 3, 1 / 3, 1 / 3, 1, 1, 1, 1])
    assert result["score"] == pytest.approx(5 / 7)
    np.testing.assert_allclose(result["curve_fps"], [0, 0, 0.25, 0.5, 0.75, 0.75, 1, 1])
    np.testing.assert_allclose(
        result["curve_sensitivity"], [0, 1 / 3, 1 / 3, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 1]
    )
    assert result["thresholds"][0] == np.inf


def test_froc_class_agnostic():
    # Ignoring classes, the .8 detection on image b hits the lesion; .5 is then a FP.
    # FP/image: 0, 0, .25, .5, .75, 1, 1 ; sensitivity 1/3, 2/3 x5, 1
    gt, preds = _froc_case()
    result = froc(gt, preds, class_aware=False)
    np.testing.assert_allclose(result["sensitivity"], [2 / 3, 2 / 3, 2 / 3, 1, 1, 1, 1])


def test_froc_ties_enter_together():
    # A tied TP and FP on one film: there is no threshold keeping only the TP, so at
    # 0.5 FP/image the sensitivity is 0 whatever their order; at 1 FP/image it is 1.
    gt = {"a": _gt(LESION, [0])}
    for order in ([LESION, FAR], [FAR, LESION]):
        result = froc(gt, {"a": _pred(np.vstack(order), [0.5, 0.5], [0, 0])}, [0.5, 1.0])
        np.testing.assert_allclose(result["sensitivity"], [0.0, 1.0])
        np.testing.assert_allclose(result["curve_fps"], [0.0, 1.0])


def test_froc_counts_images_without_ground_truth():
    gt = {"a": _gt(LESION, [0])}
    preds = {"a": _pred(LESION, [0.5], [0]), "b": _pred(FAR, [0.9], [0])}
    # 2 images: the FP on b comes first (0.5 FP/image) -> sensitivity 0 below 0.5.
    result = froc(gt, preds, fps_per_image=[0.25, 0.5])
    np.testing.assert_allclose(result["sensitivity"], [0.0, 1.0])
    # With 8 extra normal films the same FP is 0.1 FP/image.
    more = dict(gt, **{f"n{k}": _gt(np.zeros((0, 4)), []) for k in range(8)})
    result = froc(more, preds, fps_per_image=[0.125])
    np.testing.assert_allclose(result["sensitivity"], [1.0])
