"""Evaluation metrics for box detectors: VOC mAP (VinBigData), COCO mAP, FROC.

Pure numpy (plus ``pycocotools`` for :func:`coco_map`); no Django, no torch.

Inputs
------
``gt``: ``{image_id: (boxes, classes)}`` and ``preds``: ``{image_id: (boxes, scores,
classes)}``, where ``boxes`` is ``(n, 4)`` ``x_min, y_min, x_max, y_max`` in pixels,
``classes`` ``(n,)`` integer class ids and ``scores`` ``(n,)`` confidences.  Empty
arrays (``np.zeros((0, 4))`` or ``[]``) are fine.  Image ids are any hashable.

Conventions shared by every metric
----------------------------------
* **Images** evaluated are the union of ``gt`` and ``preds`` keys, ordered as the keys
  of ``gt`` first, then the keys found only in ``preds``.  An image absent from ``gt``
  (or present with no boxes) is a legitimate image with no lesion: every detection on
  it is a false positive.
* **IoU** is :func:`annotations.geometry.iou_matrix`, the platform's one IoU: continuous
  coordinates, area = ``(x_max - x_min) * (y_max - y_min)``, no "+1 pixel" (as
  pycocotools; the MATLAB VOC devkit adds 1).  Boxes of zero area have IoU 0 with
  everything, an identical zero-area box included, so they can never be matched.
* A detection **matches** a box when ``IoU >= iou`` (the MATLAB VOC devkit and COCO
  both use ``>=``; the Python VOC ports use ``>``; only exact equality differs).
* **Ties** in score are broken by a stable sort: among detections with equal scores,
  the one that comes first in input order (image order above, then row order within
  the image) is ranked first.  The result is deterministic but does depend on that
  order (a tied TP ranked before a tied FP gives a higher AP than the reverse), exactly
  as in the VOC devkit and pycocotools, which also use stable sorts.
* Matching is per image and per class, greedily in descending score order.

Average precision (VOC2010+ all-point interpolation)
----------------------------------------------------
Precision is made monotone (the envelope: precision at recall ``r`` is the highest
precision at any recall ``>= r``) and AP is the exact area under that step curve.
A class without ground truth has an undefined AP: ``nan``, excluded from the mean.
A class with ground truth but no detections scores ``0.0``.

Why COCO ``AP50`` differs from VOC AP at IoU 0.5
------------------------------------------------
pycocotools samples the precision envelope at 101 recall points (0, 0.01, ..., 1)
instead of integrating it exactly, keeps at most ``maxDets`` (100) detections per
image, and matches a detection to the best *still unmatched* ground truth, where VOC
matches it to the best-overlapping ground truth and counts it as a false positive if
that one is taken.  The numbers are close but not equal.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Hashable, Iterable, Mapping, Sequence

import numpy as np

from annotations.geometry import as_boxes, iou_matrix

FROC_FPS_PER_IMAGE = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
FULL_IMAGE_BOX = (0.0, 0.0, 1.0, 1.0)

GroundTruth = Mapping[Hashable, tuple]
Predictions = Mapping[Hashable, tuple]


# --------------------------------------------------------------------------- inputs


def _vector(value, n: int, name: str, dtype) -> np.ndarray:
    v = np.asarray(value, dtype=dtype).reshape(-1)
    if len(v) != n:
        raise ValueError(f"{name} has {len(v)} entries for {n} boxes")
    return v


def _normalise(
    gt: GroundTruth, preds: Predictions
) -> tuple[list, dict[Hashable, tuple], dict[Hashable, tuple]]:
    """Image order, and every image's ``(boxes, classes)`` / ``(boxes, scores, classes)``."""
    images = list(gt.keys()) + [i for i in preds.keys() if i not in gt]
    g: dict[Hashable, tuple] = {}
    p: dict[Hashable, tuple] = {}
    for image in images:
        if image in gt:
            boxes, classes = gt[image]
            b = as_boxes(boxes)
            g[image] = (b, _vector(classes, len(b), "gt classes", np.int64))
        else:
            g[image] = (np.zeros((0, 4)), np.zeros(0, dtype=np.int64))
        if image in preds:
            boxes, scores, classes = preds[image]
            b = as_boxes(boxes)
            p[image] = (
                b,
                _vector(scores, len(b), "scores", np.float64),
                _vector(classes, len(b), "pred classes", np.int64),
            )
        else:
            p[image] = (np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64))
    return images, g, p


def _match(
    det_boxes: np.ndarray, det_scores: np.ndarray, gt_boxes: np.ndarray, iou: float, voc: bool
) -> np.ndarray:
    """TP flags (in input order) of one image's detections of one class.

    Detections are visited in descending score order (stable).  ``voc=True``: a
    detection goes to the ground truth it overlaps most (lowest index on equal IoU);
    if that one is already matched, or the IoU is below ``iou``, it is a false
    positive.  ``voc=False``: it goes to the most-overlapping *unmatched* ground truth.
    """
    tp = np.zeros(len(det_boxes), dtype=bool)
    if len(det_boxes) == 0 or len(gt_boxes) == 0:
        return tp
    overlaps = iou_matrix(det_boxes, gt_boxes)
    taken = np.zeros(len(gt_boxes), dtype=bool)
    for d in np.argsort(-det_scores, kind="stable"):
        row = overlaps[d] if voc else np.where(taken, -1.0, overlaps[d])
        j = int(np.argmax(row))
        if row[j] >= iou and not taken[j]:
            taken[j] = True
            tp[d] = True
    return tp


def _class_detections(
    images: list, g: dict, p: dict, cls: int | None, iou: float, voc: bool
) -> tuple[np.ndarray, np.ndarray, int]:
    """TP flags and scores of class ``cls`` (``None``: every class as one), image order."""
    tps, confs, n_gt = [], [], 0
    for image in images:
        gb, gc = g[image]
        pb, ps, pc = p[image]
        gmask = np.ones(len(gb), bool) if cls is None else gc == cls
        pmask = np.ones(len(pb), bool) if cls is None else pc == cls
        n_gt += int(gmask.sum())
        if pmask.any():
            tps.append(_match(pb[pmask], ps[pmask], gb[gmask], iou, voc))
            confs.append(ps[pmask])
    if not tps:
        return np.zeros(0, bool), np.zeros(0), n_gt
    return np.concatenate(tps), np.concatenate(confs), n_gt


# ----------------------------------------------------------------- VOC AP and mAP


def average_precision_voc(tp: Sequence[bool], conf: Sequence[float], n_gt: int) -> float:
    """All-point interpolated average precision (PASCAL VOC 2010 onwards).

    ``tp[i]`` says whether detection ``i`` (confidence ``conf[i]``) is a true
    positive; ``n_gt`` is the number of ground-truth boxes.  Detections are ranked by
    descending confidence with a stable sort (ties keep input order).  Recall and
    precision are taken after every detection, precision is replaced by its envelope
    (the maximum precision at any greater or equal recall) and AP is the area under
    the resulting step function of recall, from recall 0 to the last recall reached.

    Returns ``nan`` when ``n_gt == 0`` (undefined; callers exclude it from means) and
    ``0.0`` when there are ground truths but no detections (or no true positives).
    """
    tp = np.asarray(tp, dtype=bool).reshape(-1)
    conf = np.asarray(conf, dtype=np.float64).reshape(-1)
    if len(tp) != len(conf):
        raise ValueError("tp and conf must have the same length")
    if n_gt < 0:
        raise ValueError("n_gt must be >= 0")
    if n_gt == 0:
        return math.nan
    if len(tp) == 0:
        return 0.0
    if int(tp.sum()) > n_gt:
        raise ValueError("more true positives than ground truths")
    order = np.argsort(-conf, kind="stable")
    hits = tp[order].astype(np.float64)
    cum_tp = np.cumsum(hits)
    recall = cum_tp / n_gt
    precision = cum_tp / np.arange(1, len(hits) + 1)
    # Sentinels, envelope, then sum precision over the recall steps.
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def with_no_finding(
    gt: GroundTruth, preds: Predictions, no_finding_class: int
) -> tuple[dict, dict]:
    """VinBigData's "No finding" as its own class, as a box class on a unit box.

    Ground truth: rows of class ``no_finding_class`` are dropped, then every image
    (of the union of ``gt`` and ``preds``) left without any box gets exactly one
    ``[0, 0, 1, 1]`` box of ``no_finding_class``.  Predictions: rows of class
    ``no_finding_class`` are image-level "this film is normal" predictions; their box is
    replaced by ``[0, 0, 1, 1]`` and their score kept (the challenge's ``"14 s 0 0 1 1"``).
    The unit boxes always overlap with IoU 1, so the top-scoring such prediction on a
    normal film is a TP, any further ones are FPs, and one on an abnormal film is a FP.
    """
    images, g, p = _normalise(gt, preds)
    unit = np.asarray(FULL_IMAGE_BOX)
    out_gt: dict = {}
    out_preds: dict = {}
    for image in images:
        gb, gc = g[image]
        keep = gc != no_finding_class
        gb, gc = gb[keep], gc[keep]
        if len(gb) == 0:
            gb, gc = unit[None, :].copy(), np.array([no_finding_class], dtype=np.int64)
        out_gt[image] = (gb, gc)
        pb, ps, pc = p[image]
        pb = pb.copy()
        pb[pc == no_finding_class] = unit
        out_preds[image] = (pb, ps, pc)
    return out_gt, out_preds


def map_at_iou(
    gt: GroundTruth,
    preds: Predictions,
    iou: float = 0.4,
    classes: Iterable[int] | None = None,
    no_finding_class: int | None = None,
) -> dict:
    """VOC all-point mAP at one IoU threshold, as the VinBigData challenge scores it.

    Per class, detections of all images are matched greedily (VOC protocol, see
    :func:`_match`: each ground truth at most once, a detection whose best-overlapping
    ground truth is already taken is a false positive), pooled, and scored by
    :func:`average_precision_voc`.  ``classes``: the class ids to report (default: every
    class seen in ``gt`` or ``preds``, sorted); detections of other classes are ignored.
    ``no_finding_class``: evaluate "No finding" as its own class (see
    :func:`with_no_finding`); it is added to ``classes`` when missing.

    Returns ``{"map": float, "ap": {cls: float}, "n_gt": {cls: int}, "n_pred": {cls:
    int}}``; ``ap`` is ``nan`` for classes without ground truth, and ``map`` is the mean
    over classes with at least one ground truth (``nan`` if none has).
    """
    if no_finding_class is not None:
        gt, preds = with_no_finding(gt, preds, no_finding_class)
    images, g, p = _normalise(gt, preds)
    if classes is None:
        seen = [g[i][1] for i in images] + [p[i][2] for i in images]
        wanted = sorted({int(c) for arr in seen for c in arr})
    else:
        wanted = [int(c) for c in classes]
    if no_finding_class is not None and no_finding_class not in wanted:
        wanted.append(int(no_finding_class))
    ap: dict[int, float] = {}
    n_gt: dict[int, int] = {}
    n_pred: dict[int, int] = {}
    for cls in wanted:
        tp, conf, count = _class_detections(images, g, p, cls, iou, voc=True)
        ap[cls] = average_precision_voc(tp, conf, count)
        n_gt[cls] = count
        n_pred[cls] = len(conf)
    defined = [v for v in ap.values() if not math.isnan(v)]
    return {
        "map": float(np.mean(defined)) if defined else math.nan,
        "ap": ap,
        "n_gt": n_gt,
        "n_pred": n_pred,
    }


# ----------------------------------------------------------------------- COCO mAP


def coco_map(
    gt: GroundTruth,
    preds: Predictions,
    image_sizes: Mapping[Hashable, tuple[int, int]] | None = None,
    max_dets: int = 100,
) -> dict:
    """COCO box mAP@[.5:.95], AP50, AP75 and per-class AP@[.5:.95] via pycocotools.

    The COCO ground-truth and result datasets are built in memory: images are numbered
    1..N in the shared image order (so pycocotools' tie-breaking follows it too),
    categories are the class ids seen in ``gt`` or ``preds``, boxes become ``[x, y, w,
    h]``, ``iscrowd`` is 0 and ``area`` is ``w * h``.  ``image_sizes`` (``{image_id:
    (height, width)}``) is recorded on the images but does not affect box evaluation.
    pycocotools' printing is silenced.  Area range "all"; at most ``max_dets``
    detections per image (the highest scoring).

    Returns ``{"map", "ap50", "ap75", "ap": {cls: float}}``; values are ``nan`` where
    pycocotools reports -1 (no ground truth).  See the module docstring for why ``ap50``
    differs from :func:`map_at_iou` at ``iou=0.5``.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, g, p = _normalise(gt, preds)
    ids = {image: k + 1 for k, image in enumerate(images)}
    cats = sorted({int(c) for i in images for c in (*g[i][1], *p[i][2])})
    coco_images = []
    for image in images:
        entry = {"id": ids[image]}
        if image_sizes is not None and image in image_sizes:
            height, width = image_sizes[image]
            entry.update(height=int(height), width=int(width))
        coco_images.append(entry)
    categories = [{"id": c, "name": str(c)} for c in cats]

    def annotations(with_scores: bool) -> list[dict]:
        out = []
        for image in images:
            if with_scores:
                boxes, scores, classes = p[image]
            else:
                boxes, classes = g[image]
                scores = None
            for k, (box, cls) in enumerate(zip(boxes, classes, strict=True)):
                w, h = float(box[2] - box[0]), float(box[3] - box[1])
                ann = {
                    "id": len(out) + 1,  # pycocotools treats id 0 as "unmatched"
                    "image_id": ids[image],
                    "category_id": int(cls),
                    "bbox": [float(box[0]), float(box[1]), w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
                if scores is not None:
                    ann["score"] = float(scores[k])
                out.append(ann)
        return out

    def dataset(anns: list[dict]) -> COCO:
        coco = COCO()
        coco.dataset = {"images": coco_images, "categories": categories, "annotations": anns}
        coco.createIndex()
        return coco

    nan = {"map": math.nan, "ap50": math.nan, "ap75": math.nan, "ap": {c: math.nan for c in cats}}
    if not cats:
        return nan
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = dataset(annotations(False))
        coco_dt = dataset(annotations(True))
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.params.imgIds = [ids[i] for i in images]
        evaluator.params.catIds = cats
        evaluator.params.maxDets = [int(max_dets)]
        evaluator.evaluate()
        evaluator.accumulate()
    # precision: [iou thresholds, recall points, classes, area ranges, max dets]
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    thresholds = evaluator.params.iouThrs

    def mean(values: np.ndarray) -> float:
        valid = values[values > -1]
        return float(valid.mean()) if valid.size else math.nan

    return {
        "map": mean(precision),
        "ap50": mean(precision[np.isclose(thresholds, 0.5)]),
        "ap75": mean(precision[np.isclose(thresholds, 0.75)]),
        "ap": {c: mean(precision[:, :, k]) for k, c in enumerate(cats)},
    }


# --------------------------------------------------------------------------- FROC


def froc(
    gt: GroundTruth,
    preds: Predictions,
    fps_per_image: Sequence[float] = FROC_FPS_PER_IMAGE,
    iou: float = 0.4,
    class_aware: bool = True,
) -> dict:
    """Lesion-level FROC: sensitivity at given average false positives per image.

    Matching: per image (and per class when ``class_aware``; otherwise classes are
    ignored), detections in descending score order (stable); a detection is a TP if it
    overlaps an *unmatched* ground truth with ``IoU >= iou`` (it takes the most
    overlapping such one), otherwise a FP.  Every image of the union counts in the
    per-image FP rate, including those without ground truth (where every detection is a
    FP).

    The curve has one operating point per distinct score threshold ``t`` (all
    detections with score ``>= t`` kept, so tied detections enter together), plus the
    origin (no detection kept).  The sensitivity at rate ``r`` is the highest
    sensitivity of an operating point with ``FP / images <= r``.

    Returns ``{"fps_per_image": tuple, "sensitivity": ndarray, "score": float (the mean
    of the sensitivities, the usual "FROC score"), "curve_fps": ndarray, "curve_sensitivity":
    ndarray, "thresholds": ndarray (inf for the origin)}``.  With no ground truth at
    all, sensitivities and the score are ``nan``.
    """
    images, g, p = _normalise(gt, preds)
    rates = tuple(float(r) for r in fps_per_image)
    if class_aware:
        cats = sorted({int(c) for i in images for c in (*g[i][1], *p[i][2])})
        parts = [_class_detections(images, g, p, c, iou, voc=False) for c in cats]
    else:
        parts = [_class_detections(images, g, p, None, iou, voc=False)]
    n_gt = sum(part[2] for part in parts)
    tp = np.concatenate([np.zeros(0, bool)] + [part[0] for part in parts])
    conf = np.concatenate([np.zeros(0)] + [part[1] for part in parts])
    order = np.argsort(-conf, kind="stable")
    tp, conf = tp[order], conf[order]
    cum_tp = np.cumsum(tp)
    cum_fp = np.cumsum(~tp)
    # Keep the last detection of every run of equal scores: a score threshold.
    last = np.nonzero(np.append(conf[1:] != conf[:-1], True))[0] if len(conf) else np.zeros(0, int)
    n_images = max(len(images), 1)
    curve_fps = np.concatenate(([0.0], cum_fp[last] / n_images))
    thresholds = np.concatenate(([np.inf], conf[last]))
    if n_gt == 0:
        curve_sens = np.full(len(curve_fps), math.nan)
        sens = np.full(len(rates), math.nan)
    else:
        curve_sens = np.concatenate(([0.0], cum_tp[last] / n_gt))
        sens = np.array([curve_sens[curve_fps <= r].max() for r in rates])
    return {
        "fps_per_image": rates,
        "sensitivity": sens,
        "score": float(sens.mean()) if n_gt else math.nan,
        "curve_fps": curve_fps,
        "curve_sensitivity": curve_sens,
        "thresholds": thresholds,
    }
