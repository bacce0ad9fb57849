"""Mask consensus against exact anatomy: STAPLE, majority vote and each reader.

    python -m bench.segmentation [--films 30] [--size 512] [--repeats 3] [--seed 0]

Films are projected from the real chest CT (``ct_anatomy.render_ct``; half with an
enlarged heart) and carry exact masks of both lung fields and the heart.  A panel of
five simulated readers paints every structure (``mask_readers``): two careful readers
(boundary wobble 1.0 and 1.3 px on a 256 px film, scaled with the film), three hurried
ones (3.5 to 4.5 px), one of whom lets the brush leak past the boundary on 60% of
structures.  Printed, each against the others
measured in the same run:

* Dice with the exact mask of STAPLE, of majority vote and of each single reader (mean
  over films, repeats and structures; paired difference STAPLE - majority with its
  standard error);
* the readers ranked by STAPLE's estimates (mean of sensitivity and specificity) against
  the same figure measured against the exact truth on the same pixels;
* the cardiothoracic ratio from the STAPLE consensus against the ratio of the exact masks
  (largest and mean absolute error; target within 0.02).
"""

from __future__ import annotations

import argparse
import hashlib
import pickle
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

from annotations.consensus import masks as mask_consensus
from annotations.consensus.mask_agreement import dice
from annotations.imaging.ctr import cardiothoracic_ratio
from annotations.imaging.synthetic import lesions as L
from annotations.imaging.synthetic.ct_anatomy import HEART, LEFT_LUNG, RIGHT_LUNG, render_ct
from annotations.imaging.synthetic.mask_readers import MaskReaderProfile, read_masks

CACHE = Path(__file__).resolve().parent / "out" / "segmentation_cache"

#: (code, boundary wobble in pixels of a 256 px film, leak rate); scaled with the film
PANEL_SPEC = [("R1", 1.0, 0.0), ("R2", 1.1, 0.0), ("R3", 2.5, 0.0), ("R4", 3.0, 0.6),
              ("R5", 3.5, 0.0)]


def panel(size: int) -> list[MaskReaderProfile]:
    """The five readers for a film of ``size`` pixels (a hand's wobble scales with it)."""
    return [MaskReaderProfile(code, boundary_px=b * size / 256, leak_rate=leak, leak_size=0.5)
            for code, b, leak in PANEL_SPEC]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.segmentation")
    p.add_argument("--films", type=int, default=30)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    return p


def films(n: int, size: int, seed: int) -> list[dict[str, np.ndarray]]:
    """Exact masks of ``n`` CT-derived films (cached: rendering is the slow part)."""
    key = hashlib.sha256(f"{n}-{size}-{seed}-v1".encode()).hexdigest()[:12]
    path = CACHE / f"{key}.pkl"
    if path.exists():
        with open(path, "rb") as fh:
            return pickle.load(fh)
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        findings = [L.CARDIOMEGALY] if i % 2 else []
        out.append(render_ct(size, size, findings, rng).masks)
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump(out, fh)
    return out


def _ctr(m: dict[str, np.ndarray]) -> float:
    return cardiothoracic_ratio(m[HEART], m[RIGHT_LUNG], m[LEFT_LUNG]).ratio


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    readers = panel(args.size)
    t0 = time.perf_counter()
    truth_films = films(args.films, args.size, args.seed)
    t_render = time.perf_counter() - t0
    strategies = {name: mask_consensus.build({"mask_method": name})
                  for name in ("staple", "majority")}
    scores: dict[str, list[float]] = {k: [] for k in [*strategies, *(p.code for p in readers)]}
    est: dict[str, list[float]] = {p.code: [] for p in readers}
    true: dict[str, list[float]] = {p.code: [] for p in readers}
    ctr_err: list[float] = []
    for rep in range(args.repeats):
        for i, truth in enumerate(truth_films):
            reads = read_masks(truth, readers, np.random.default_rng([args.seed, rep, i, 7]))
            merged: dict[str, np.ndarray] = {}
            for name, exact in truth.items():
                by_reader = {r: reads[r][name] for r in reads}
                for sname, strategy in strategies.items():
                    result = strategy.merge(by_reader)
                    scores[sname].append(dice(result.mask, exact))
                    if sname == "staple":
                        merged[name] = result.mask
                        roi = mask_consensus.roi_bounds(np.any(list(by_reader.values()), 0))
                        sens, spec = mask_consensus.reader_rates(by_reader, exact, roi)
                        for r in by_reader:
                            est[r].append((result.sensitivity[r] + result.specificity[r]) / 2)
                            true[r].append((sens[r] + spec[r]) / 2)
                for r, m in by_reader.items():
                    scores[r].append(dice(m, exact))
            ctr_err.append(abs(_ctr(merged) - _ctr(truth)))
    elapsed = time.perf_counter() - t0
    n = len(scores["staple"])
    print(f"# bench.segmentation: {args.films} CT-derived films at {args.size} px x "
          f"{args.repeats} repeats x 3 structures = {n} masks, 5 readers "
          f"(render {t_render:.0f} s, total {elapsed:.0f} s)")
    print()
    print("| Dice with the exact mask | mean | ratio to best single reader |")
    print("|---|---:|---:|")
    best = max(np.mean(scores[p.code]) for p in readers)
    for k, v in scores.items():
        print(f"| {k} | {np.mean(v):.4f} | {np.mean(v) / best:.4f} |")
    diff = np.array(scores["staple"]) - np.array(scores["majority"])
    print(f"\nSTAPLE - majority (paired): {diff.mean():+.4f} +/- {diff.std() / np.sqrt(n):.4f} "
          f"(standard error; STAPLE better on {(diff > 0).mean():.0%}, worse on "
          f"{(diff < 0).mean():.0%})")
    print("\n| reader | STAPLE estimate (sens+spec)/2 | against the truth | rank (est / true) |")
    print("|---|---:|---:|---:|")
    codes = [p.code for p in readers]
    e = np.array([np.mean(est[c]) for c in codes])
    t = np.array([np.mean(true[c]) for c in codes])
    er, tr = stats.rankdata(-e), stats.rankdata(-t)
    for c, ev, tv, a, b in zip(codes, e, t, er, tr, strict=True):
        print(f"| {c} | {ev:.4f} | {tv:.4f} | {a:.0f} / {b:.0f} |")
    rho = stats.spearmanr(e, t).statistic
    print(f"\nSpearman rank correlation, estimate vs truth: {rho:.2f}"
          f"{' (ranks identical)' if (er == tr).all() else ''}")
    err = np.array(ctr_err)
    print(f"\nCardiothoracic ratio from the STAPLE consensus vs exact masks: max |error| "
          f"{err.max():.4f}, mean {err.mean():.4f} over {len(err)} films (target <= 0.02)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
