"""Mask consensus against exact anatomy: STAPLE, majority vote and each reader.

    python -m bench.segmentation [--films 30] [--size 512] [--repeats 3] [--seed 0]
                                 [--gold 10] [--preset tiny] [--iters 300]

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
  (largest and mean absolute error; target within 0.02);
* the mask model: a MONAI U-Net (``training.segmenter``) trained on the STAPLE consensus
  of the first films, as the platform trains it, and its gold Dice and HD95 on the last
  ``--gold`` films against their exact masks, beside an atlas baseline measured in the
  same run (each class's mean training mask, thresholded at 0.5: what a model that
  ignores the film would paint).
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
    p.add_argument("--gold", type=int, default=10)
    p.add_argument("--preset", default="tiny", choices=["tiny", "unet"])
    p.add_argument("--iters", type=int, default=300)
    return p


def films(n: int, size: int, seed: int) -> list[dict[str, np.ndarray]]:
    """Exact masks of ``n`` CT-derived films (cached: rendering is the slow part)."""
    return [m for m, _ in films_with_images(n, size, seed)]


def films_with_images(n: int, size: int, seed: int
                      ) -> list[tuple[dict[str, np.ndarray], np.ndarray]]:
    """``(exact masks, 8-bit film)`` of ``n`` CT-derived films, cached."""
    key = hashlib.sha256(f"{n}-{size}-{seed}-v2".encode()).hexdigest()[:12]
    path = CACHE / f"{key}.pkl"
    if path.exists():
        with open(path, "rb") as fh:
            return pickle.load(fh)
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        findings = [L.CARDIOMEGALY] if i % 2 else []
        r = render_ct(size, size, findings, rng)
        out.append((r.masks, (np.clip(r.image, 0, 1) * 255).astype(np.uint8)))
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
    rendered = films_with_images(args.films, args.size, args.seed)
    truth_films = [m for m, _ in rendered]
    t_render = time.perf_counter() - t0
    strategies = {name: mask_consensus.build({"mask_method": name})
                  for name in ("staple", "majority")}
    scores: dict[str, list[float]] = {k: [] for k in [*strategies, *(p.code for p in readers)]}
    est: dict[str, list[float]] = {p.code: [] for p in readers}
    true: dict[str, list[float]] = {p.code: [] for p in readers}
    ctr_err: list[float] = []
    consensus_of: dict[int, dict[str, np.ndarray]] = {}  # repeat 0: what a model trains on
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
            if rep == 0:
                consensus_of[i] = merged
    t_consensus = time.perf_counter() - t0
    n = len(scores["staple"])
    print(f"# bench.segmentation: {args.films} CT-derived films at {args.size} px x "
          f"{args.repeats} repeats x 3 structures = {n} masks, 5 readers "
          f"(render {t_render:.0f} s, consensus {t_consensus:.0f} s)")
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
    _model(args, rendered, consensus_of)
    return 0


def _model(args: argparse.Namespace, rendered, consensus_of) -> None:
    """Train the U-Net on the consensus of the training films; gold Dice vs an atlas."""
    import torch

    from training.segmenter import Segmenter, segmenter_config, train_segmenter
    from training.segmenter_metrics import segmenter_metrics

    names = [RIGHT_LUNG, LEFT_LUNG, HEART]
    n_train = len(rendered) - args.gold
    if n_train < 2 or args.gold < 1:
        print("\n(no model: --films must exceed --gold by at least 2)")
        return
    torch.manual_seed(args.seed)
    images = [img for _, img in rendered]
    targets = [np.stack([consensus_of[i][n] for n in names]) for i in range(n_train)]
    cfg = segmenter_config(names, preset=args.preset)
    t0 = time.perf_counter()
    model = train_segmenter(cfg, images[:n_train], targets, max_iter=args.iters,
                            batch_size=4, seed=args.seed)
    t_train = time.perf_counter() - t0
    gold = list(range(n_train, len(rendered)))
    truth = [np.stack([rendered[i][0][n] for n in names]) for i in gold]
    probs = Segmenter(model, cfg).predict([images[i] for i in gold])
    atlas = np.mean(np.stack(targets).astype(np.float32), axis=0)
    got = segmenter_metrics(truth, probs, names)
    base = segmenter_metrics(truth, [atlas] * len(gold), names)
    print(f"\nMask model ({args.preset} U-Net, {args.iters} iterations on {n_train} films' "
          f"STAPLE consensus, {t_train:.0f} s on CPU); gold: {len(gold)} films, exact masks")
    print("\n| class | U-Net Dice | atlas Dice | ratio | U-Net HD95 px | atlas HD95 px |")
    print("|---|---:|---:|---:|---:|---:|")
    for n in names:
        a, b = got["per_class"][n], base["per_class"][n]
        print(f"| {n} | {a['dice']:.4f} | {b['dice']:.4f} | {a['dice'] / b['dice']:.3f} | "
              f"{a['hd95_px']:.1f} | {b['hd95_px']:.1f} |")
    print(f"| mean | {got['mean_dice']:.4f} | {base['mean_dice']:.4f} | "
          f"{got['mean_dice'] / base['mean_dice']:.3f} | | |")


if __name__ == "__main__":
    sys.exit(main())
