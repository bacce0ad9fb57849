"""Does the classifier in front of the detector help?  One run, both ways.

    python -m bench.two_stage [--films 300] [--gold 100] [--det-iters 400] ...

Films are CT-derived (``ct_anatomy.render_ct``, lesions of six kinds inserted in the
volume, exact boxes), about 70% of them normal as in VinBigData; rendered once and
cached under ``bench/out/two_stage_cache/<key>``.  On the same training films (exact
labels) the bench trains the detector (the platform's preset, in memory through
``training.replay``) and the image classifier (``training.classifier``, targets: the
six findings and "No finding").  On the held-out gold films it scores:

* **detector alone** (the baseline, measured in the same run): its boxes, and
  "No finding" with one minus its best box score;
* **two-stage** (``training.two_stage.gate``): box scores times P(abnormal), films
  with P(normal) >= the operating point called normal (boxes dropped), "No finding"
  with P(normal);

and prints gold mAP@0.4 under the VinBigData "No finding" rule (``metrics.with_no_finding``:
"No finding" as a seventh class on a unit box), the lesion classes' mAP, the
classifier's AUROC for "No finding", and the false-positive boxes per normal film at
score >= 0.5, 0.3 and 0.1 each way, with the ratio two-stage / detector alone.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

OUT_DIR = Path(__file__).resolve().parent / "out"
FILMS_VERSION = 1  # bump when the rendering below changes
FP_AT = (0.5, 0.3, 0.1)  # score floors at which false boxes on normal films are counted


def _render(n: int, seed: int, px: int, normal: float) -> tuple[Path, list[dict]]:
    import cv2

    from annotations.imaging.synthetic import ct_anatomy
    from annotations.imaging.synthetic import lesions as L

    key = hashlib.sha256(f"{FILMS_VERSION}:{n}:{seed}:{px}:{normal}".encode()).hexdigest()[:12]
    root = OUT_DIR / "two_stage_cache" / key
    if (root / "truth.json").exists():
        print(f"films: {n} cached CT-derived films in {root}")
        return root, json.loads((root / "truth.json").read_text())
    t0 = time.perf_counter()
    rng = np.random.default_rng([seed, 0x25])
    lesion_plan = [k for k in L.plan_findings(4 * n, rng) if k]
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        kinds = [] if rng.random() < normal else lesion_plan[i]
        r = ct_anatomy.render_ct(px, px, kinds, np.random.default_rng([seed, i, 7]))
        name = f"film{i:04d}.png"
        cv2.imwrite(str(root / name), np.clip(np.rint(r.image * 255), 0, 255).astype(np.uint8))
        rows.append({"file": name, "boxes": [[b.x_min, b.y_min, b.x_max, b.y_max]
                                             for b in r.boxes],
                     "classes": [b.class_name for b in r.boxes]})
    (root / "truth.json").write_text(json.dumps(rows))
    print(f"films: rendered {n} CT-derived films in {time.perf_counter() - t0:.0f} s")
    return root, rows


def parser() -> argparse.ArgumentParser:
    """The options of this bench (``bench.explain`` trains the same two models)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--films", type=int, default=300)
    p.add_argument("--gold", type=int, default=100)
    p.add_argument("--normal", type=float, default=0.7, help="share of normal films")
    p.add_argument("--px", type=int, default=256)
    p.add_argument("--det-preset", default="tiny")
    p.add_argument("--det-iters", type=int, default=400)
    p.add_argument("--cls-preset", default="tiny")
    p.add_argument("--cls-iters", type=int, default=1500)
    p.add_argument("--cls-size", type=int, default=192)
    p.add_argument("--threshold", type=float, default=0.9,
                   help="operating point: P(normal) at which a film is called normal")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    return p


@dataclass
class Trained:
    """Both models, trained on the same films, and the gold films to score them on."""

    classes: list[str]
    truth: dict[str, tuple[np.ndarray, np.ndarray]]
    gold: list[str]
    gold_images: list[np.ndarray]
    detector: object
    classifier: object  # training.classifier.Classifier
    seconds: dict[str, float]


def train_both(args: argparse.Namespace) -> Trained:
    import cv2
    import torch
    from detectron2.structures import BoxMode

    from annotations.imaging.synthetic.lesions import LESION_KINDS
    from training.classifier import Classifier, classifier_config, train_classifier
    from training.replay import ReplayLearner

    cv2.setNumThreads(1)
    torch.set_num_threads(args.threads)
    root, rows = _render(args.films, args.seed, args.px, args.normal)
    classes = list(LESION_KINDS)
    index = {c: k for k, c in enumerate(classes)}
    truth = {r["file"]: (np.asarray(r["boxes"], dtype=np.float64).reshape(-1, 4),
                         np.array([index[c] for c in r["classes"]], dtype=np.int64))
             for r in rows}
    order = np.random.default_rng([args.seed, 1]).permutation(len(rows))
    gold = [rows[i]["file"] for i in order[:args.gold]]
    train = [rows[i]["file"] for i in order[args.gold:]]
    n_normal = sum(len(truth[f][1]) == 0 for f in gold)
    print(f"split: train {len(train)}, gold {len(gold)} ({n_normal} normal)", flush=True)

    def load(files):
        return [cv2.imread(str(root / f), cv2.IMREAD_UNCHANGED) for f in files]

    records = [{"file_name": str(root / f), "height": args.px, "width": args.px,
                "annotations": [{"bbox": [float(v) for v in b], "bbox_mode": BoxMode.XYXY_ABS,
                                 "category_id": int(c)} for b, c in zip(*truth[f], strict=True)]}
               for f in train]
    t0 = time.perf_counter()
    learner = ReplayLearner(classes, preset=args.det_preset, min_size=args.px,
                            device=args.device)
    fitted = learner.fit(records, iterations=args.det_iters, seed=args.seed)
    detector = learner.detector(fitted.weights, score_thresh=0.05)
    t_det = time.perf_counter() - t0
    t0 = time.perf_counter()
    names = [*classes, "No finding"]
    cfg = classifier_config(names, preset=args.cls_preset, input_size=args.cls_size)
    model = train_classifier(cfg, load(train), targets(truth, train, len(classes)),
                             max_iter=args.cls_iters, batch_size=16, seed=args.seed)
    t_cls = time.perf_counter() - t0
    print(f"trained: detector {args.det_preset} {args.det_iters} it ({t_det:.0f} s), "
          f"classifier {args.cls_preset} {args.cls_size} px {args.cls_iters} it "
          f"({t_cls:.0f} s)", flush=True)
    return Trained(classes, truth, gold, load(gold), detector, Classifier(model, cfg),
                   {"detector": t_det, "classifier": t_cls})


def targets(truth: dict, files: list[str], n_lesion_classes: int) -> np.ndarray:
    """0/1 per lesion class present, then "No finding"."""
    y = np.zeros((len(files), n_lesion_classes + 1), dtype=np.float32)
    for i, f in enumerate(files):
        y[i, truth[f][1]] = 1.0
        y[i, n_lesion_classes] = float(len(truth[f][1]) == 0)
    return y


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from training import metrics
    from training.classifier_metrics import classifier_metrics
    from training.two_stage import detector_p_normal, gate

    t_start = time.perf_counter()
    m = train_both(args)
    gold, truth, nf = m.gold, m.truth, len(m.classes)
    dets = m.detector.predict(m.gold_images)
    probs = m.classifier.predict(m.gold_images)
    y_gold = targets(truth, gold, nf)
    cls_report = classifier_metrics(y_gold, probs, m.classifier.class_names)
    det_nf = classifier_metrics(y_gold[:, nf:], np.array(
        [[detector_p_normal(d.scores)] for d in dets]), ["No finding"])

    unit = np.array([[0.0, 0.0, 1.0, 1.0]])
    alone, dropped, gated = {}, {}, {}
    for f, det, p in zip(gold, dets, probs, strict=True):
        boxes, scores, cls = det.boxes, det.scores, det.classes
        alone[f] = (np.concatenate([boxes, unit]), np.append(scores, detector_p_normal(scores)),
                    np.append(cls, nf))
        for out, rescale in ((dropped, False), (gated, True)):
            g = gate(scores, float(p[nf]), args.threshold, rescale=rescale)
            out[f] = (np.concatenate([boxes[g.keep], unit]),
                      np.append(g.scores[g.keep], g.no_finding), np.append(cls[g.keep], nf))

    def score(preds):
        gt, pr = metrics.with_no_finding(truth_gold, preds, nf)
        full = metrics.map_at_iou(gt, pr, iou=0.4, classes=range(nf + 1))
        lesions = metrics.map_at_iou(gt, pr, iou=0.4, classes=range(nf))
        normal = [f for f in gold if len(truth[f][1]) == 0]
        fp = {t: float(np.mean([np.sum((preds[f][1] >= t) & (preds[f][2] != nf))
                                for f in normal])) for t in FP_AT}
        return full["map"], lesions["map"], fp

    truth_gold = {f: truth[f] for f in gold}
    a, d, b = score(alone), score(dropped), score(gated)

    def ratio(x, y):
        return f"{y / x:.2f}" if x else "-"

    nf_auc = cls_report["per_class"]["No finding"]["auroc"]
    print(f"\noperating point P(normal) >= {args.threshold}; gold AUROC of \"No finding\": "
          f"classifier {nf_auc:.3f}, detector alone (1 - best box) "
          f"{det_nf['per_class']['No finding']['auroc']:.3f}; classifier macro AUROC "
          f"{cls_report['macro_auroc']:.3f}")
    print("\ntwo-stage: films called normal lose their boxes, \"No finding\" = P(normal); "
          "rescaled: box scores also times P(abnormal); ratios against the detector alone")
    print("\n| gold (VinBigData rule) | detector alone | two-stage | ratio "
          "| two-stage, rescaled | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    rows = [("mAP@0.4 with No finding (7 classes)", 0, None),
            ("mAP@0.4 lesions only (6 classes)", 1, None)]
    rows += [(f"FP boxes per normal film, score >= {t}", 2, t) for t in FP_AT]
    for label, k, t in rows:
        x, y, z = ((r[k] if t is None else r[k][t]) for r in (a, d, b))
        fmt = "{:.3f}" if t is None else "{:.2f}"
        print(f"| {label} | {fmt.format(x)} | {fmt.format(y)} | {ratio(x, y)} "
              f"| {fmt.format(z)} | {ratio(x, z)} |")
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
