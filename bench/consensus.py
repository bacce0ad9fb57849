"""Benchmark of the consensus engine on the VinBigData training CSV.

Run: ``python -m bench.consensus``.  Loads the CSV (downloaded on first use,
see ``annotations.public_data``), checks our vectorised WBF against
ensemble-boxes 1.0.9 on exactly the same normalised inputs, times every
strategy and the agreement metrics over the whole set, compares strategies
against simulated truth, and prints the WBF speedup line last.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
from ensemble_boxes import weighted_boxes_fusion

from annotations.consensus import agreement, build
from annotations.consensus.flat import FlatReads
from annotations.consensus.wbf import reference_inputs
from annotations.consensus.wbf_core import CONF_TYPES
from annotations.formats.vinbigdata import parse_csv
from annotations.public_data import VINBIGDATA_CSV, read_text
from bench.consensus_grid import print_grid
from bench.consensus_heldout import print_vinbigdata

IOU = 0.4
PRIORITY = {"readers": ["R9", "R10", "R8"], "fallback": {"strategy": "majority"}}


def _timed(fn, repeat: int = 1):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def _compare(flat: FlatReads, conf_type: str, refs) -> tuple[float, float, int]:
    strategy = build("wbf", {"iou_thr": IOU, "conf_type": conf_type})
    fused = strategy.fuse_flat(flat)
    starts = np.searchsorted(fused.image, np.arange(flat.n_images + 1))
    d_box = d_score = 0.0
    mismatched = 0
    for i, (rb, rs, rl) in enumerate(refs):
        lo, hi = starts[i], starts[i + 1]
        if hi - lo != len(rb) or not np.array_equal(rl.astype(np.int64), fused.labels[lo:hi]):
            mismatched += 1
            continue
        d_box = max(d_box, float(np.abs(rb - fused.boxes[lo:hi]).max(initial=0.0)))
        d_score = max(d_score, float(np.abs(rs - fused.scores[lo:hi]).max(initial=0.0)))
    return d_box, d_score, mismatched


def main() -> None:
    warnings.simplefilter("ignore")  # ensemble-boxes warns on every clipped box
    text = read_text(VINBIGDATA_CSV)
    images, t_parse = _timed(lambda: parse_csv(text))
    flat = FlatReads.build(images)
    print(f"VinBigData: {len(images)} images, {len(flat.box_class)} boxes, "
          f"{len(flat.readers)} readers (parse {t_parse:.2f} s)")

    inputs = reference_inputs(flat)
    ours_t: dict[str, float] = {}
    ref_t: dict[str, float] = {}
    for conf in CONF_TYPES:
        strategy = build("wbf", {"iou_thr": IOU, "conf_type": conf})
        _, ours_t[conf] = _timed(lambda s=strategy: s.fuse_flat(flat), repeat=3)
        refs, ref_t[conf] = _timed(lambda c=conf: [
            weighted_boxes_fusion(b, s, lab, weights=w, iou_thr=IOU, conf_type=c)
            for b, s, lab, w in inputs
        ])
        d_box, d_score, bad = _compare(flat, conf, refs)
        print(f"wbf {conf:<24} ours {ours_t[conf]:.3f} s  reference {ref_t[conf]:.3f} s  "
              f"max|dcoord| {d_box:.2e}  max|dscore| {d_score:.2e}  images differing {bad}")

    print("\nwhole set, end to end from ImageReads (best of 3):")
    total = 0.0
    runs = [("wbf", {"iou_thr": IOU}), ("majority", {"iou_thr": IOU}),
            ("reader_priority", PRIORITY), ("reader_weighted", {"iou_thr": IOU}),
            ("reader_model", {"iou_thr": IOU})]
    results = {}
    for name, params in runs:
        strategy = build(name, params)
        results[name], dt = _timed(lambda s=strategy: s.run(images), repeat=3)
        total += dt
        n_boxes = sum(len(r.classes) for r in results[name].values())
        n_normal = sum(1 for r in results[name].values() if r.image_labels)
        print(f"  {name:<16} {dt:.3f} s  boxes {n_boxes:6d}  No finding images {n_normal}")
    for label, fn in [
        ("pairwise F1", lambda: agreement.pairwise_agreement(images, IOU)),
        ("Fleiss kappa", lambda: agreement.presence_kappa(images)),
        ("reader vs cons", lambda: agreement.reader_vs_consensus(images, results["wbf"], IOU)),
    ]:
        out, dt = _timed(fn, repeat=3)
        total += dt
        print(f"  {label:<16} {dt:.3f} s  ({len(out)} rows)")
    print(f"  total            {total:.3f} s")
    kappas = agreement.presence_kappa(images)
    print("  kappa per class: " + ", ".join(
        f"{k.class_id}:{k.kappa:.2f}" for k in kappas if k.kappa is not None))

    print_grid()
    print_vinbigdata(images)

    ours, ref = ours_t["avg"], ref_t["avg"]
    print(f"\nwbf speedup vs ensemble-boxes: {ref / ours:.1f}x "
          f"(ours {ours:.3f} s, reference {ref:.3f} s; conf_type avg, whole set)")


if __name__ == "__main__":
    main()
