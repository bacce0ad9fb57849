"""The scenario grid: every consensus strategy against simulated panels with truth.

Used by ``python -m bench.consensus``.  Each panel is a pool of simulated
readers (``annotations.consensus.simulate``) of whom ``k`` read each image.
Per panel: F1 at IoU 0.4 against the hidden truth for every strategy, and
for ``reader_model`` the largest error of its sensitivity and
false-positives-per-image estimates over readers with at least 200 reads
(against what each reader actually did in the panel, and against the
parameters the panel was drawn from).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from annotations.consensus import build
from annotations.consensus.simulate import (
    NOISY_GOOD_READERS,
    UNEQUAL_READERS,
    SimReader,
    calibration,
    f1_against_truth,
    scored_against_truth,
    simulate_panel,
)

IOU = 0.4
MIN_READS = 200


@dataclass(frozen=True)
class Panel:
    name: str
    readers: tuple[SimReader, ...]
    k: int | None = 3
    n_images: int = 3000
    lesion_rate: float = 1.0


def _pool(n: int, sens: tuple[float, float], fp: tuple[float, float], seed: int,
          jitter: float = 0.05) -> list[SimReader]:
    rng = np.random.default_rng(seed)
    return [SimReader(f"R{i + 1}", round(float(rng.uniform(*sens)), 3),
                      round(float(np.exp(rng.uniform(*np.log(fp)))), 3),
                      round(float(jitter * rng.uniform(0.7, 1.5)), 3))
            for i in range(n)]


def panels() -> list[Panel]:
    vindr = tuple(_pool(17, (0.5, 0.95), (0.02, 1.5), seed=1))
    class_skill = tuple(
        SimReader(f"R{i + 1}", s, fp, 0.05) for i, (s, fp) in enumerate([
            ((0.9, 0.6, 0.3), 0.1), ((0.3, 0.9, 0.6), 0.1), ((0.6, 0.3, 0.9), 0.1),
            ((0.8, 0.8, 0.5), 0.3), ((0.5, 0.8, 0.8), 0.3), ((0.85, 0.5, 0.85), 0.3),
        ]))
    newcomer = vindr[:16] + (SimReader("R17", 0.55, 1.2, 0.08, max_reads=30),)
    loose = vindr[:16] + (SimReader("R17", 0.9, 0.1, 0.12, looseness=1.5),)
    return [
        Panel("VinDr-like: 3 of 17", vindr),
        Panel("5 of 17", vindr, k=5),
        Panel("3 of 17, 70% normal films", vindr, lesion_rate=0.35, n_images=6000),
        Panel("3 of 17, busy films", vindr, lesion_rate=2.5),
        Panel("all careful (sens 0.85-0.95, FP 0.02-0.1)",
              tuple(_pool(17, (0.85, 0.95), (0.02, 0.1), seed=2))),
        Panel("all noisy (sens 0.5-0.7, FP 0.5-1.5)",
              tuple(_pool(17, (0.5, 0.7), (0.5, 1.5), seed=3))),
        Panel("low sensitivity (0.5-0.6, FP 0.02-0.2)",
              tuple(_pool(17, (0.5, 0.6), (0.02, 0.2), seed=4))),
        Panel("careful A, B; much worse C", UNEQUAL_READERS, k=None, n_images=2000),
        Panel("noisier A, B; much worse C", NOISY_GOOD_READERS, k=None, n_images=2000),
        Panel("class-specific skill, 3 of 6", class_skill),
        Panel("a reader with 30 reads", newcomer),
        Panel("a reader who boxes loosely (x1.5)", loose),
        Panel("3 of 5", tuple(_pool(5, (0.5, 0.95), (0.02, 1.5), seed=5)), n_images=2000),
    ]


def _strategies(panel: Panel) -> list[tuple[str, str, dict]]:
    # reader priority gets the oracle order (best true skill first): its strongest form
    skill = sorted(panel.readers, key=lambda r: -(float(np.mean(r.sensitivity))
                                                  - 0.5 * r.fp_per_image))
    return [
        ("majority", "majority", {"iou_thr": IOU}),
        ("wbf", "wbf", {"iou_thr": IOU}),
        ("wbf>=0.5", "wbf", {"iou_thr": IOU}),
        ("priority", "reader_priority", {"readers": [r.code for r in skill],
                                         "fallback": {"strategy": "majority"}}),
        ("weighted", "reader_weighted", {"iou_thr": IOU}),
        ("model", "reader_model", {"iou_thr": IOU}),
    ]


def _thresholded(results: dict, thr: float) -> dict:
    out = {}
    for image_id, res in results.items():
        keep = res.scores >= thr
        out[image_id] = type(res)(res.boxes[keep], res.classes[keep], res.scores[keep],
                                  [s for s, k in zip(res.support, keep, strict=True) if k],
                                  res.image_labels, res.meta)
    return out


def run_panel(panel: Panel, seed: int = 11) -> dict:
    images, truth = simulate_panel(panel.readers, panel.k, panel.n_images,
                                   lesion_rate=panel.lesion_rate, seed=seed)
    f1: dict[str, float] = {}
    model = None
    t_model = 0.0
    for label, name, params in _strategies(panel):
        strategy = build(name, params)
        t0 = time.perf_counter()
        results = strategy.run(images)
        if label == "model":
            t_model, model = time.perf_counter() - t0, strategy
        if label == "wbf>=0.5":
            results = _thresholded(results, 0.5)
        f1[label] = f1_against_truth(results, truth.boxes, IOU)["f1"]
    everything = build("reader_model", {"iou_thr": IOU, "decision": "threshold",
                                        "threshold": 0.0}).run(images)
    ece, _curve = calibration(*scored_against_truth(everything, truth.boxes, IOU))
    errs_real, errs_param = [], []
    for r in panel.readers:
        real = truth.realised(r.code)
        if real["reads"] < MIN_READS:
            continue
        est = model.reader_estimates[r.code]
        errs_real.append((abs(est["sensitivity"] - real["sensitivity"]),
                          abs(est["fp_per_image"] - real["fp_per_image"])))
        s_param = float(np.average(np.asarray(r.sensitivity, dtype=float)
                                   * np.ones(truth.n_classes),
                                   weights=truth.lesions[r.code] + 1e-9))
        errs_param.append((abs(est["sensitivity"] - s_param),
                           abs(est["fp_per_image"] - r.fp_per_image)))
    er, ep = np.array(errs_real).reshape(-1, 2), np.array(errs_param).reshape(-1, 2)
    best_other = max(v for k, v in f1.items() if k != "model")
    return {"f1": f1, "best_other": best_other, "wins": f1["model"] >= best_other - 1e-9,
            "err_real": er.max(axis=0) if len(er) else np.zeros(2),
            "err_param": ep.max(axis=0) if len(ep) else np.zeros(2),
            "n_checked": len(er), "seconds": t_model, "ece": ece,
            "newcomer": _newcomer(panel, model, truth)}


def _newcomer(panel: Panel, model, truth) -> str:
    few = [r for r in panel.readers if r.max_reads is not None]
    if not few:
        return ""
    r = few[0]
    est = model.reader_estimates[r.code]
    return (f"{r.code} ({truth.reads[r.code]} reads, truth sens {r.sensitivity}, "
            f"FP {r.fp_per_image}): estimated {est['sensitivity']:.2f} "
            f"[{est['sensitivity_ci'][0]:.2f}, {est['sensitivity_ci'][1]:.2f}], "
            f"FP {est['fp_per_image']:.2f} [{est['fp_per_image_ci'][0]:.2f}, "
            f"{est['fp_per_image_ci'][1]:.2f}]")


def print_grid() -> bool:
    """Print the grid; True when every panel meets both targets."""
    labels = [s[0] for s in _strategies(panels()[0])]
    head = f"{'panel':<44}" + "".join(f"{x:>9}" for x in labels)
    print("\nscenario grid: F1 at IoU 0.4 against the hidden truth")
    print(head + "   wins  |dsens| |dFP| (realised; vs params)          ECE   s")
    all_ok = True
    notes = []
    for panel in panels():
        out = run_panel(panel)
        ok_est = bool((out["err_real"] <= 0.05).all())
        all_ok &= out["wins"] and ok_est
        er, ep = out["err_real"], out["err_param"]
        print(f"{panel.name:<44}" + "".join(f"{out['f1'][x]:9.3f}" for x in labels)
              + f"   {'yes' if out['wins'] else 'NO ':<4}  {er[0]:.3f} {er[1]:.3f}"
              f" ({ep[0]:.3f} {ep[1]:.3f}; {out['n_checked']:>2} readers)"
              f"  {out['ece']:.3f} {out['seconds']:.1f}")
        if out["newcomer"]:
            notes.append(out["newcomer"])
    for n in notes:
        print("  shrinkage: " + n)
    print(f"targets (model F1 >= best other in every panel; estimates within 0.05 of what "
          f"readers with >= {MIN_READS} reads did): {'met' if all_ok else 'NOT met'}")
    return all_ok
