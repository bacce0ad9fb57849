"""Active-learning replay: does a strategy reach random sampling's mAP with fewer labels?

    python -m bench.al_replay [--strategies random,entropy,hybrid] [--rounds 3]
        [--budget 8] [--seed-set 8] [--pool 48] [--gold 12] [--iters 150]
        [--size 256] [--threads 2] [--seed 7] [--keep]

A synthetic dataset with hidden truth (``generate_studies``, phantom anatomy,
small square films) is read by three simulated readers (R1..R3, each with its
own miss rate, false-positive rate and box jitter).  Every strategy gets a
fresh project holding the same films, the same seed set and the same gold set,
and then replays ``rounds`` rounds through the platform's services only:

1. train the tiny Detectron2 preset from scratch (random init, ``iters``
   iterations, 2 images per batch) on every non-gold image with a final label;
   the new version is evaluated on the gold set (mAP@0.4) and promoted by force
   so the next selection is always made by the model just trained;
2. ``al_round_run`` selects ``budget`` images from the pool with the strategy;
3. only now are the selected images' simulated reads revealed
   (``reader_annotation_record`` from the readers CSV), and a WBF consensus run
   turns them into final labels; back to 1.

Training from scratch (not fine-tuning the previous version) keeps each point of
a curve a function of the labelled set alone; the torch / NumPy seeds are reset
to the same value before the n-th training of every strategy, so the curves
differ by what was labelled, not by initialisation luck.

Gold truth is the generator's hidden ground truth, not the readers: each gold
image carries exactly one read, by an inactive "GT" reader, holding the true
boxes, and the consensus of a single read is that read (checked at start-up).
Evaluating against reader consensus would score the model against the readers'
misses and false positives.

Printed: the learning curves (gold mAP@0.4 per number of labelled images, one
column per strategy), the plot path (``bench/out/al_replay.png``), and last the
labels each strategy needed to first reach random's final mAP as a fraction of
random's labels (the first measured round at or above it; no interpolation).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

OUT_DIR = Path(__file__).resolve().parent / "out"
READERS = ("R1", "R2", "R3")
GT_READER = "GT"


def _setup_django(data_dir: str) -> None:
    os.environ["CXR_DATA_DIR"] = data_dir
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cxr_platform.settings")
    import django

    django.setup()


def _seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Dataset:
    """The generated films, their hidden truth and the simulated reads, split once."""

    def __init__(self, root: Path, n: int, seed: int, size: int, n_gold: int, n_seed: int):
        import numpy as np

        from annotations.formats.vinbigdata import parse_csv
        from annotations.imaging.synthetic import generate_studies

        res = generate_studies(root, n, seed=seed, anatomy="phantom", size=(size, size),
                               n_readers=len(READERS), readers_per_image=len(READERS),
                               compressed_fraction=0.0)
        self.files = res.files
        self.ids = res.image_ids
        self.truth = dict(zip(res.image_ids, res.truth, strict=True))
        self.reads = {r.image_id: r.reads for r in parse_csv(res.readers_csv.read_text())}
        self.profiles = res.readers
        order = [self.ids[i] for i in np.random.default_rng([seed, 77]).permutation(n)]
        self.gold = order[:n_gold]
        self.seed_set = order[n_gold:n_gold + n_seed]
        self.pool = order[n_gold + n_seed:]


def _make_readers() -> None:
    from annotations.models import Reader
    from annotations.services.readers import reader_create

    for code in (*READERS, GT_READER):
        reader_create(email=f"{code.lower()}@bench.invalid", code=code)
    Reader.objects.filter(code=GT_READER).update(active=False)  # never assigned work


def _reveal(project, images: list, data: Dataset) -> None:
    """Record the simulated readers' reads of ``images`` (platform services only)."""
    from annotations.models import Reader
    from annotations.services.annotating import BoxIn, reader_annotation_record
    from annotations.taxonomy import VINDR_CXR_CLASSES

    readers = {r.code: r for r in Reader.objects.filter(code__in=READERS)}
    for image, image_id in images:
        for read in data.reads[image_id]:
            boxes = [BoxIn(VINDR_CXR_CLASSES[int(c)], *map(float, b))
                     for b, c in zip(read.boxes, read.classes, strict=True)]
            reader_annotation_record(image=image, reader=readers[read.reader], boxes=boxes,
                                     image_labels=[] if boxes else ["No finding"],
                                     trigger_consensus=False)


def _consensus(project) -> None:
    from annotations.services.consensus import consensus_run_create, consensus_run_execute

    run = consensus_run_execute(run_id=consensus_run_create(
        project=project, strategy="wbf", enqueue=False).pk)
    if run.status != "done":
        raise RuntimeError(f"consensus failed: {run.reason}")


def _build_project(slug: str, data: Dataset):
    """A project with every film ingested, the gold truth and the seed set's reads."""
    from annotations.models import Image, Reader
    from annotations.services.annotating import BoxIn, reader_annotation_record
    from annotations.services.ingest import ingest_batch_create, ingest_item_process, source_key
    from annotations.services.projects import project_create
    from annotations.services.readers import assignments_create

    # the VinDr-CXR taxonomy: readers' false positives may use any of its 14 classes
    project = project_create(name=slug, slug=slug, readers_per_image=len(READERS))
    batch = ingest_batch_create(project=project, inputs=data.files)
    for item_id in batch.items.order_by("seq").values_list("id", flat=True):
        status = ingest_item_process(item_id=item_id).status
        if status != "imported":
            raise RuntimeError(f"ingest: item {item_id} {status}")
    by_key = {i.source_key: i for i in Image.objects.filter(project=project)}
    images = {i: by_key[source_key(i)] for i in data.ids}
    Image.objects.filter(pk__in=[images[i].pk for i in data.gold]).update(is_gold=True)
    gt = Reader.objects.get(code=GT_READER)
    for image_id in data.gold:
        boxes = [BoxIn(b.class_name, b.x_min, b.y_min, b.x_max, b.y_max)
                 for b in data.truth[image_id]]
        reader_annotation_record(image=images[image_id], reader=gt, boxes=boxes,
                                 image_labels=[] if boxes else ["No finding"],
                                 complete_assignment=False, trigger_consensus=False)
    seed_images = [images[i] for i in data.seed_set]
    assignments_create(project=project, images=seed_images)
    _reveal(project, [(images[i], i) for i in data.seed_set], data)
    _consensus(project)
    return project, images


def _check_gold(project, images: dict, data: Dataset) -> None:
    """The gold images' final labels must be the generator's boxes, exactly."""
    import numpy as np

    from annotations.services.model_registry import gold_truth

    _, truth = gold_truth(project)
    bad = [i for i in data.gold if images[i].pseudo_id not in truth]
    for image_id in data.gold:
        if image_id in bad:
            continue
        want = np.array([[b.x_min, b.y_min, b.x_max, b.y_max] for b in data.truth[image_id]],
                        dtype=np.float64).reshape(-1, 4)
        got = np.asarray(truth[images[image_id].pseudo_id][0], dtype=np.float64).reshape(-1, 4)
        if want.shape != got.shape or not np.allclose(np.sort(want, 0), np.sort(got, 0),
                                                      atol=1e-3):
            bad.append(image_id)
    if bad:
        raise RuntimeError(f"gold labels differ from the hidden truth on {len(bad)} images")


def _train(project, round_no: int, args) -> tuple[float | None, float]:
    from annotations.models import ModelVersion
    from annotations.services.model_registry import version_promote
    from annotations.services.training import training_run_create, training_run_execute

    _seed_everything(args.seed * 1000 + round_no)
    t0 = time.perf_counter()
    run = training_run_create(project=project, enqueue=False, params={
        "preset": "tiny", "max_iter": args.iters, "ims_per_batch": 2,
        "base_lr": args.lr, "val_fraction": 0.0})
    run = training_run_execute(run_id=run.pk)
    if run.status != "done":
        raise RuntimeError(f"training failed: {run.reason}")
    version = ModelVersion.objects.get(training_run=run)
    if not version.promoted:  # the replay always selects with the newest model
        version_promote(version=version, reason="al replay: newest model")
    value = version.metrics.get("map_40")
    return (None if value is None else float(value)), time.perf_counter() - t0


def _replay(strategy: str, data: Dataset, args) -> tuple[list[int], list[float | None]]:
    from annotations.services.active_learning import al_round_run

    t0 = time.perf_counter()
    project, images = _build_project(f"al-{strategy.replace('_', '-')}", data)
    if strategy == "random":
        _check_gold(project, images, data)
    by_pid = {img.pseudo_id: (img, src) for src, img in images.items()}
    labeled, maps = [len(data.seed_set)], []
    for r in range(args.rounds + 1):
        value, secs = _train(project, r, args)
        maps.append(value)
        shown = "n/a" if value is None else f"{value:.3f}"
        print(f"  {strategy:>16} round {r}: {labeled[-1]:3d} labelled, gold mAP@0.4 {shown}"
              f" (train+eval {secs:.0f} s)", flush=True)
        if r == args.rounds:
            break
        t1 = time.perf_counter()
        rnd = al_round_run(project=project, strategy=strategy, budget=args.budget,
                           params=_strategy_params(strategy), seed=args.seed + r)
        print(f"  {strategy:>16} round {r + 1}: selected {len(rnd.selected)} "
              f"(scoring + selection {time.perf_counter() - t1:.0f} s)", flush=True)
        _reveal(project, [by_pid[p] for p in rnd.selected], data)
        _consensus(project)
        labeled.append(labeled[-1] + len(rnd.selected))
    print(f"  {strategy:>16} done in {time.perf_counter() - t0:.0f} s", flush=True)
    return labeled, maps


def _strategy_params(strategy: str) -> dict:
    return {"hybrid": {"pool_factor": 3}}.get(strategy, {})


def _first_reach(labeled: list[int], maps: list[float | None], target: float) -> int | None:
    for n, m in zip(labeled, maps, strict=True):
        if m is not None and m >= target - 1e-12:
            return n
    return None


def _plot(curves: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for name, (labeled, maps) in curves.items():
        ys = [float("nan") if m is None else m for m in maps]
        ax.plot(labeled, ys, marker="o", lw=2.2 if name == "random" else 1.5,
                ls="--" if name == "random" else "-", label=name)
    ax.set_xlabel("images labelled (seed set + rounds)")
    ax.set_ylabel("gold mAP@0.4")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", default="random,entropy,hybrid",
                        help="comma-separated; random is always added (the reference)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--budget", type=int, default=8, help="images selected per round")
    parser.add_argument("--seed-set", type=int, default=8, help="labelled before round 1")
    parser.add_argument("--pool", type=int, default=48, help="unlabelled images to pick from")
    parser.add_argument("--gold", type=int, default=12, help="gold images (hidden truth)")
    parser.add_argument("--iters", type=int, default=150, help="training iterations per round")
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--size", type=int, default=256, help="film side in pixels (>= 256)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", default=str(OUT_DIR / "al_replay.png"))
    parser.add_argument("--keep", action="store_true", help="keep the temporary data folder")
    args = parser.parse_args(argv)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    strategies = ["random"] + [s for s in dict.fromkeys(strategies) if s != "random"]
    if args.rounds * args.budget > args.pool:
        parser.error("rounds * budget must not exceed the pool")

    t_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="bench-al-replay-"))
    os.environ.setdefault("OPENCV_FOR_THREADS_NUM", "1")
    _setup_django(str(work / "var"))
    import cv2
    import torch
    from django.conf import settings
    from django.core.management import call_command

    from training.active_learning import available

    unknown = [s for s in strategies if s not in available()]
    if unknown:
        parser.error(f"unknown strategies {unknown}; available: {available()}")
    cv2.setNumThreads(1)
    torch.set_num_threads(args.threads)
    settings.PRELABEL_SCORE_THRESH = 0.01  # a weak model's doubtful boxes carry the signal
    settings.MODEL_DIR = work / "models"
    call_command("migrate", verbosity=0)
    import logging

    logging.disable(logging.WARNING)

    n = args.gold + args.seed_set + args.pool
    data = Dataset(work / "dicom", n, args.seed, args.size, args.gold, args.seed_set)
    n_boxes = sum(len(b) for b in data.truth.values())
    print(f"dataset: {n} phantom films {args.size}x{args.size} (seed {args.seed}), "
          f"{n_boxes} true boxes; gold {args.gold}, seed set {args.seed_set}, "
          f"pool {args.pool}")
    print("readers: " + ", ".join(f"{p.code} miss {p.miss_rate:.2f} fp {p.fp_rate:.2f} "
                                  f"jitter {p.jitter:.2f}" for p in data.profiles))
    print(f"rounds {args.rounds} x budget {args.budget}; tiny preset from scratch, "
          f"{args.iters} iters x 2 images, lr {args.lr}; torch threads {args.threads}",
          flush=True)
    _make_readers()

    curves = {}
    for strategy in strategies:
        curves[strategy] = _replay(strategy, data, args)

    labeled = curves["random"][0]
    print()
    print("gold mAP@0.4 by images labelled")
    print(f"{'labelled':>8} " + " ".join(f"{s:>16}" for s in strategies))
    for k, n_lab in enumerate(labeled):
        cells = []
        for s in strategies:
            m = curves[s][1][k]
            cells.append(f"{'n/a' if m is None else f'{m:.3f}':>16}")
        print(f"{n_lab:>8} " + " ".join(cells))
    out = Path(args.out)
    _plot(curves, out, f"AL replay: {args.size}px phantom, seed set {args.seed_set}, "
                       f"budget {args.budget}/round, tiny {args.iters} it, gold {args.gold}")
    print(f"plot: {out}")
    print(f"total {time.perf_counter() - t_start:.0f} s")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"kept {work}")

    target = curves["random"][1][-1]
    total = labeled[-1]
    parts = []
    for s in strategies:
        reach = _first_reach(*curves[s], target) if target is not None else None
        parts.append(f"{s} 1.00 (not reached)" if reach is None
                     else f"{s} {reach / total:.2f}")
    shown = "n/a" if target is None else f"{target:.3f}"
    print(f"labels to reach random's final mAP ({shown} at {total} labels), "
          f"as a fraction of random's: " + ", ".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
