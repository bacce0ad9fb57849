"""Grad-CAM against the detector for localisation, on films with exact truth.

    python -m bench.explain [the options of bench.two_stage]

Trains the detector and the image classifier on the same CT-derived films as
``bench.two_stage`` (same options, same cache).  For every true lesion on the gold
films, with the classifier's Grad-CAM map for that lesion's class
(``training.explain``):

* pointing game: does the map's peak fall inside the true box?  Printed against its
  random baseline (the box's share of the film) measured on the same boxes;
* localisation: IoU with the true box of the map thresholded at half its peak
  (largest region, its bounding box), against the IoU of the detector's best box of
  that class; and the share of lesions each localises at IoU >= 0.4 (the VinBigData
  threshold).

That is the comparison behind choosing detection over Grad-CAM for localisation.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from bench.two_stage import parser, train_both


def _iou(a: np.ndarray | None, b: np.ndarray) -> float:
    if a is None:
        return 0.0
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from training.explain import cam_box, classifier_cams, pointing_baseline, pointing_hit

    t_start = time.perf_counter()
    m = train_both(args)
    dets = m.detector.predict(m.gold_images)
    hits, chance, cam_iou, det_iou, kinds = [], [], [], [], []
    for f, image, det in zip(m.gold, m.gold_images, dets, strict=True):
        boxes, classes = m.truth[f]
        for c in sorted(set(classes.tolist())):
            maps = classifier_cams(m.classifier, [image], m.classes[c])[0]
            for box in boxes[classes == c]:
                hits.append(pointing_hit(maps, box))
                chance.append(pointing_baseline(box, image.shape[:2]))
                cam_iou.append(_iou(cam_box(maps), box))
                own = det.boxes[det.classes == c]
                det_iou.append(max((_iou(b, box) for b in own), default=0.0))
                kinds.append(m.classes[c])
    hits, chance = np.array(hits, float), np.array(chance)
    cam_iou, det_iou, kinds = np.array(cam_iou), np.array(det_iou), np.array(kinds)
    print(f"\n{len(hits)} true lesions on {len(m.gold)} gold films")
    print("\n| lesions | n | pointing game | random baseline | Grad-CAM box IoU (median) "
          "| detector box IoU (median) | Grad-CAM IoU>=0.4 | detector IoU>=0.4 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in ["all", *sorted(set(kinds.tolist()))]:
        sel = np.ones(len(kinds), bool) if name == "all" else kinds == name
        if not sel.any():
            continue
        print(f"| {name} | {int(sel.sum())} | {hits[sel].mean():.2f} | {chance[sel].mean():.3f} "
              f"| {np.median(cam_iou[sel]):.2f} | {np.median(det_iou[sel]):.2f} "
              f"| {(cam_iou[sel] >= 0.4).mean():.2f} | {(det_iou[sel] >= 0.4).mean():.2f} |")
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
