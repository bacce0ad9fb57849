"""Reader estimates on the real VinBigData reads, and a check that needs no truth.

The check: hide half of one reader's reads, fit ``reader_model`` on the rest,
and predict, for each hidden box, whether another reader of that image drew
a matching box (same class, IoU >= 0.4).  The model's prediction uses what it
learned: P(real | this reader drew it) from the reader's sensitivity and
false-positive rate for the class, then P(another reader drew it) from the
other readers' sensitivities (if real) or their false positives landing
there by chance (if not).  Majority's implied model treats readers as
interchangeable: one agreement rate per class, from the same training reads.
A higher held-out log-likelihood means the reader model predicts the panel
better.  Both halves of every reader are scored.
"""

from __future__ import annotations

import numpy as np

from annotations.consensus import build
from annotations.consensus.clustering import cluster_boxes
from annotations.consensus.flat import FlatReads
from annotations.consensus.params import ClassThresholds
from annotations.consensus.types import ImageReads

IOU = 0.4


def _agrees(flat: FlatReads) -> np.ndarray:
    clusters = cluster_boxes(flat, ClassThresholds(IOU))
    return clusters.size[clusters.cluster_of] >= 2


def _without(images: list[ImageReads], reader: str, hidden: set[str]) -> list[ImageReads]:
    return [ImageReads(im.image_id, im.width, im.height,
                       [r for r in im.reads if not (r.reader == reader and im.image_id in hidden)])
            for im in images]


def _loglik(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return float(np.mean(np.where(y, np.log(p), np.log1p(-p))))


def heldout(images: list[ImageReads]) -> list[dict]:
    flat = FlatReads.build(images)
    agree = _agrees(flat)
    index_of = {image_id: i for i, image_id in enumerate(flat.image_ids)}
    rows = []
    for h, code in enumerate(flat.readers):
        read_ids = sorted({flat.image_ids[i] for i in flat.read_image[flat.read_reader == h]})
        y_all, p_model, p_major = [], [], []
        for fold in (0, 1):
            hidden = set(read_ids[fold::2])
            train = _without(images, code, hidden)
            model = build("reader_model", {"iou_thr": IOU})
            model.run(train)
            fit = model.fit
            cls_ids = np.array(sorted(int(c) for c in model.fit_info["coincidence"]))
            q = np.array([model.fit_info["coincidence"][str(c)] for c in cls_ids])
            train_flat = FlatReads.build(train)
            train_agree = _agrees(train_flat)
            base = {int(c): (train_agree[train_flat.box_class == c].sum() + 1)
                    / ((train_flat.box_class == c).sum() + 2) for c in cls_ids.tolist()}
            tr_index = {c: k for k, c in enumerate(train_flat.readers)}
            test = np.flatnonzero((flat.box_reader == h) & np.isin(
                flat.box_image, [index_of[i] for i in hidden]))
            for b in test.tolist():
                c = int(flat.box_class[b])
                if c not in base or code not in tr_index:
                    continue
                j = int(np.searchsorted(cls_ids, c))
                i = int(flat.box_image[b])
                lo, hi = flat.image_read_start[i], flat.image_read_start[i + 1]
                others = [tr_index[flat.readers[r]] for r in flat.read_reader[lo:hi].tolist()
                          if r != h]
                s_h, f_h = fit.sens[tr_index[code], j], fit.fp[tr_index[code], j]
                p_real = fit.mu[j] * s_h / (fit.mu[j] * s_h + f_h)
                agree_real = 1 - np.prod(1 - fit.sens[others, j])
                agree_false = 1 - np.prod(1 - np.minimum(fit.fp[others, j] * q[j], 1.0))
                p_model.append(p_real * agree_real + (1 - p_real) * agree_false)
                p_major.append(base[c])
                y_all.append(bool(agree[b]))
        y = np.array(y_all, dtype=bool)
        rows.append({"reader": code, "boxes": len(y),
                     "model": _loglik(np.array(p_model), y) if len(y) else float("nan"),
                     "majority": _loglik(np.array(p_major), y) if len(y) else float("nan")})
    return rows


def print_vinbigdata(images: list[ImageReads]) -> None:
    model = build("reader_model", {"iou_thr": IOU})
    model.run(images)
    print("\nreader_model on VinBigData (no truth): estimates per reader, 95% intervals")
    print(f"  {'reader':<7}{'images':>7}{'boxes':>7}   sensitivity          FP/image"
          f"             box size")
    for code, e in sorted(model.reader_estimates.items(), key=lambda kv: int(kv[0][1:])
                          if kv[0][1:].isdigit() else 0):
        s, f = e["sensitivity_ci"], e["fp_per_image_ci"]
        print(f"  {code:<7}{e['n_images']:>7}{e['n_boxes']:>7}   {e['sensitivity']:.2f} "
              f"[{s[0]:.2f}, {s[1]:.2f}]   {e['fp_per_image']:.3f} [{f[0]:.3f}, {f[1]:.3f}]"
              f"   x{e['box_scale']:.2f}")
    info = model.fit_info
    print(f"  EM: {info['iterations']} iterations, converged {info['converged']}, "
          f"{info['n_candidates']} candidates, {info['kept']} kept (cut {info['cut']:.2f})")
    rows = heldout(images)
    print("\nheld-out check (half of each reader's reads hidden in turn): mean log-likelihood"
          " per hidden box of 'another reader drew it too'")
    print(f"  {'reader':<7}{'boxes':>7}{'model':>9}{'majority':>10}")
    n = m_sum = b_sum = 0.0
    for r in rows:
        if not r["boxes"]:
            continue
        print(f"  {r['reader']:<7}{r['boxes']:>7}{r['model']:9.3f}{r['majority']:10.3f}")
        n += r["boxes"]
        m_sum += r["model"] * r["boxes"]
        b_sum += r["majority"] * r["boxes"]
    print(f"  {'all':<7}{int(n):>7}{m_sum / n:9.3f}{b_sum / n:10.3f}   "
          f"(model {'better' if m_sum > b_sum else 'NOT better'} than majority's implied model)")
