"""Detector training speed: iterations a second through the platform's trainer, against
Detectron2's bare loop on the same model, data and device.

    python -m bench.train_speed [--preset tiny|r50_fpn] [--iters 20] [--warmup 5]
                                [--batch 2] [--size 512] [--films 16] [--device cpu|cuda]
                                [--amp] [--threads 1] [--repeats 2]

About 4 minutes with the defaults (tiny, 512 px, one torch thread) on a 2-core CPU.
On a GPU: ``--device cuda --preset r50_fpn --size 1024 --batch 8 --iters 100 --warmup 20 --amp``.

What runs: ``--films`` synthetic radiographs (noise, a bright lesion with its box; PNG,
``--size`` px) as a COCO file in the platform's export layout, registered as a
Detectron2 dataset.  Then, interleaved ``--repeats`` times, each for ``--warmup`` +
``--iters`` iterations from a fresh random initialisation:

* platform: ``CXRTrainer`` as the training service builds it (the platform's mapper and
  loader, its writers, and progress, checkpoint and heartbeat hooks whose callbacks do
  what the service's do short of the database: keep the state, write a checkpoint
  every ``--checkpoint-period`` iterations);
* bare: Detectron2's ``SimpleTrainer`` (``AMPTrainer`` with ``--amp``) over the same
  config's model, optimizer, learning-rate schedule and loader, with no other hook and
  no writers.

Each repetition seeds both sides alike (initialisation, sampling order).  Timed: the
last ``--iters`` iterations of each (the first ``--warmup`` warm the loader,
the allocator and cuDNN's autotuner).  The best repetition of each side is compared:
platform / bare, target: overhead at most 10 %.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

OVERHEAD_TARGET = 0.10


def _films(root: Path, n: int, size: int) -> Path:
    """``n`` noisy films with one bright lesion each, and their COCO file."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    images, annotations = [], []
    for i in range(n):
        pixels = rng.normal(90, 20, (size, size)).clip(0, 255).astype(np.uint8)
        x, y = (int(v) for v in rng.integers(size // 5, 4 * size // 5, 2))
        r = size // 12
        cv2.circle(pixels, (x, y), r, 230, -1)
        cv2.imwrite(str(root / f"film{i:03d}.png"), pixels)
        images.append({"id": i + 1, "file_name": f"film{i:03d}.png", "width": size,
                       "height": size, "image_key": f"img-{i}"})
        annotations.append({"id": i + 1, "image_id": i + 1, "category_id": 1 + i % 2,
                            "bbox": [x - r, y - r, 2 * r, 2 * r], "area": 4 * r * r,
                            "iscrowd": 0})
    path = root / "train.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 1, "name": "Nodule/Mass"},
                                               {"id": 2, "name": "Pleural effusion"}]}))
    return path


class _Clock:
    """The first hook of a trainer: notes when the warm-up's last step and the last
    step end, before any other hook of that step (so the final checkpoint Detectron2
    writes after the last step is a cost of the run, not of its iterations)."""

    def __init__(self, warmup: int, device: str) -> None:
        from detectron2.engine import HookBase

        clock = self

        class Hook(HookBase):
            def after_step(self) -> None:
                done = self.trainer.iter + 1
                if done == warmup:
                    clock.started = clock.now()
                if done == self.trainer.max_iter:
                    clock.ended = clock.now()

        self.hook, self.device = Hook(), device
        self.started = self.ended = 0.0

    def first_in(self, trainer) -> None:
        import weakref

        self.hook.trainer = weakref.proxy(trainer)
        trainer._hooks.insert(0, self.hook)

    def now(self) -> float:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
        return time.perf_counter()


def _config(args, work: Path):
    from training.config import build_config

    cfg = build_config(2, preset=args.preset, device=args.device,
                       class_names=["Nodule/Mass", "Pleural effusion"])
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = ("bench_train",), ()
    cfg.OUTPUT_DIR = str(work / "out")
    cfg.SOLVER.MAX_ITER = args.warmup + args.iters
    cfg.SOLVER.IMS_PER_BATCH = args.batch
    cfg.SOLVER.CHECKPOINT_PERIOD = 10**9
    cfg.SOLVER.AMP.ENABLED = bool(args.amp) and args.device.startswith("cuda")
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (args.size,), args.size
    cfg.DATALOADER.SAMPLER_TRAIN = "RepeatFactorTrainingSampler"
    cfg.DATALOADER.REPEAT_THRESHOLD = 0.3
    cfg.DATALOADER.NUM_WORKERS = 0
    return cfg


def _platform(cfg, args, work: Path) -> float:
    """Iterations a second through ``CXRTrainer`` with the service's kind of hooks."""
    from training.artifacts import save_model_version
    from training.trainer import CXRTrainer

    state: dict = {}

    def report(progress) -> None:
        state.update(iteration=progress.iteration, losses=dict(progress.losses))
        state.setdefault("loss_history", []).append(
            [progress.iteration, float(sum(progress.losses.values()))])

    def publish(iteration: int, model) -> None:
        folder = Path(tempfile.mkdtemp(dir=work, prefix="ckpt-"))
        state["checkpoint"] = (iteration, save_model_version(model, cfg, folder)[1])

    clock = _Clock(args.warmup, args.device)
    trainer = CXRTrainer(cfg, progress=report, progress_period=max(1, cfg.SOLVER.MAX_ITER // 50),
                         publish=publish, publish_period=args.checkpoint_period,
                         heartbeat=lambda: state.update(beat=time.time()), heartbeat_seconds=10)
    clock.first_in(trainer)
    trainer.resume_or_load(resume=False)
    trainer.train()
    return args.iters / (clock.ended - clock.started)


def _bare(cfg, args) -> float:
    """Iterations a second through Detectron2's own loop, nothing else."""
    from detectron2.engine import AMPTrainer, SimpleTrainer, hooks
    from detectron2.modeling import build_model
    from detectron2.solver import build_lr_scheduler, build_optimizer

    from training.trainer import CXRTrainer

    model = build_model(cfg)
    model.train()
    optimizer = build_optimizer(cfg, model)
    loop = AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer
    trainer = loop(model, CXRTrainer.build_train_loader(cfg), optimizer)
    # the same learning-rate schedule as the platform's side (its warm-up included)
    trainer.register_hooks([hooks.LRScheduler(optimizer, build_lr_scheduler(cfg, optimizer))])
    clock = _Clock(args.warmup, args.device)
    clock.first_in(trainer)
    trainer.train(0, cfg.SOLVER.MAX_ITER)
    return args.iters / (clock.ended - clock.started)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny", choices=["tiny", "r50_fpn"])
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--batch", type=int, default=2, help="images per iteration")
    p.add_argument("--size", type=int, default=512, help="film side, px (the model input)")
    p.add_argument("--films", type=int, default=16)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--amp", action="store_true", help="float16 autocast (cuda only)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--checkpoint-period", type=int, default=500,
                   help="platform side: a checkpoint every N iterations, timed when it falls "
                        "among the timed ones (the training service's default: 500)")
    args = p.parse_args(argv)
    if args.iters < 1 or args.warmup < 1:
        p.error("--iters and --warmup must be at least 1")

    import logging

    logging.disable(logging.INFO)  # Detectron2's per-iteration console lines
    import torch

    import training.compat  # noqa: F401
    from training.datasets import register_coco_dataset

    torch.set_num_threads(args.threads)
    device = "CPU" if args.device == "cpu" else torch.cuda.get_device_name(0)
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        work = Path(tmp)
        (work / "films").mkdir()
        coco = _films(work / "films", args.films, args.size)
        register_coco_dataset("bench_train", str(coco), str(work / "films"))
        cfg = _config(args, work)
        print(f"model {args.preset}, random init, {args.size}x{args.size} px, batch "
              f"{args.batch}, device {device}, {args.threads} torch thread(s), AMP "
              f"{'on' if cfg.SOLVER.AMP.ENABLED else 'off'}; {args.iters} iterations timed "
              f"after {args.warmup}", flush=True)
        from detectron2.utils.env import seed_all_rng

        platform, bare = [], []
        for repeat in range(args.repeats):
            # both sides from the same initialisation and the same order of films: the
            # proposals each step handles, and so its cost, are then alike
            seed_all_rng(repeat)
            bare.append(_bare(cfg, args))
            seed_all_rng(repeat)
            platform.append(_platform(cfg, args, work))
    best_p, best_b = max(platform), max(bare)
    overhead = 1 - best_p / best_b
    print(f"bare Detectron2 loop: {best_b:.3f} it/s best ({statistics.median(bare):.3f} "
          f"median), {best_b * args.batch:.2f} images/s")
    print(f"platform (CXRTrainer): {best_p:.3f} it/s best ({statistics.median(platform):.3f} "
          f"median), {best_p * args.batch:.2f} images/s")
    verdict = "PASS" if overhead <= OVERHEAD_TARGET else "FAIL"
    print(f"ratio platform/bare {best_p / best_b:.3f}: overhead {100 * overhead:.1f} % "
          f"(target <= {100 * OVERHEAD_TARGET:.0f} %) {verdict}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
