"""Training: Detectron2's ``DefaultTrainer`` with the platform's data and reporting.

``CXRTrainer`` overrides only ``build_*`` methods (Detectron2's extension
idiom), so the training loop, LR schedule, checkpointing and resume behave
exactly as upstream documents:

* loaders use ``CXRDatasetMapper`` (bit-depth-aware reading, the same pixel
  preparation as inference);
* the evaluator is ``COCOEvaluator(use_fast_impl=False)`` (the fast path
  needs the compiled ``_C`` our build does not have);
* writers are the JSON metrics file and the console printer (no TensorBoard
  dependency);
* an optional ``progress`` callback gets a ``Progress`` every
  ``progress_period`` iterations and at the end: the seam for Celery task
  state, a training-run row or a log line;
* an optional ``heartbeat`` callback is called when training starts and then
  at most every ``heartbeat_seconds`` (checked after each step), however long
  an iteration period is: the seam for a liveness row, and for stopping (it may
  raise, e.g. on cancellation; the exception ends ``train()``).

Usage::

    cfg = build_config(len(names), preset="r50_fpn", weights=path_or_url, class_names=names)
    cfg.DATASETS.TRAIN = ("cxr_train",)   # registered with register_coco_dataset
    cfg.OUTPUT_DIR = str(work_dir)
    trainer = CXRTrainer(cfg, progress=report)
    trainer.resume_or_load(resume=False)  # loads cfg.MODEL.WEIGHTS ("" = random init)
    trainer.train()
    save_model_version(trainer.model, cfg, version_dir)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import training.compat  # noqa: F401  (patches libraries before detectron2 loads)
import training.modeling  # noqa: F401  (registers CXRROIHeads)

# isort: split
from detectron2.config import CfgNode
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer, HookBase
from detectron2.evaluation import COCOEvaluator
from detectron2.utils.events import CommonMetricPrinter, EventWriter, JSONWriter

from training.mapper import CXRDatasetMapper

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Progress:
    """Where training stands: ``iteration`` is 1-based (iterations done)."""

    iteration: int
    max_iter: int
    losses: dict[str, float] = field(default_factory=dict)
    #: Estimated seconds left, from the mean step time so far (None before the first).
    eta_seconds: float | None = None

    @property
    def fraction(self) -> float:
        return self.iteration / self.max_iter if self.max_iter else 1.0


ProgressCallback = Callable[[Progress], None]


class ProgressHook(HookBase):
    """Calls ``callback`` with the latest losses every ``period`` iterations and at the end."""

    def __init__(self, callback: ProgressCallback, period: int = 20) -> None:
        self.callback = callback
        self.period = max(1, period)
        self._started: float | None = None
        self._first_iter = 0

    def before_train(self) -> None:
        self._started = time.perf_counter()
        self._first_iter = self.trainer.start_iter

    def after_step(self) -> None:
        done = self.trainer.iter + 1
        if done % self.period == 0 or done == self.trainer.max_iter:
            latest = self.trainer.storage.latest()
            losses = {k: float(v) for k, (v, _) in latest.items() if "loss" in k}
            steps = done - self._first_iter
            eta = None
            if self._started is not None and steps > 0:
                per_step = (time.perf_counter() - self._started) / steps
                eta = per_step * (self.trainer.max_iter - done)
            self.callback(Progress(done, self.trainer.max_iter, losses, eta))


class HeartbeatHook(HookBase):
    """Calls ``beat()`` before training and after a step once ``seconds`` have passed."""

    def __init__(self, beat: Callable[[], None], seconds: float) -> None:
        self.beat = beat
        self.seconds = seconds
        self._last = 0.0

    def _beat(self) -> None:
        self._last = time.monotonic()
        self.beat()

    def before_train(self) -> None:
        self._beat()

    def after_step(self) -> None:
        if time.monotonic() - self._last >= self.seconds:
            self._beat()


CheckpointCallback = Callable[[int, "torch.nn.Module"], None]


class PublishCheckpointHook(HookBase):
    """Hands the model to ``publish`` every ``period`` iterations (not at the end:
    the finished model is published as a model version by the caller)."""

    def __init__(self, publish: CheckpointCallback, period: int) -> None:
        self.publish = publish
        self.period = period

    def after_step(self) -> None:
        done = self.trainer.iter + 1
        if self.period > 0 and done % self.period == 0 and done < self.trainer.max_iter:
            self.publish(done, self.trainer.model)


class CXRTrainer(DefaultTrainer):
    """``DefaultTrainer`` over the platform's mapper, evaluator, writers and progress hook."""

    def __init__(
        self, cfg: CfgNode, *, progress: ProgressCallback | None = None, progress_period: int = 20,
        publish: CheckpointCallback | None = None, publish_period: int = 0,
        heartbeat: Callable[[], None] | None = None, heartbeat_seconds: float = 10.0,
    ) -> None:
        # build_hooks runs inside DefaultTrainer.__init__, so these must exist first.
        self._progress = progress
        self._progress_period = progress_period
        self._publish = publish
        self._publish_period = publish_period
        self._heartbeat = heartbeat
        self._heartbeat_seconds = heartbeat_seconds
        super().__init__(cfg)

    @classmethod
    def build_train_loader(cls, cfg: CfgNode):
        return build_detection_train_loader(cfg, mapper=CXRDatasetMapper(cfg, is_train=True))

    @classmethod
    def build_test_loader(cls, cfg: CfgNode, dataset_name: str):
        return build_detection_test_loader(
            cfg, dataset_name, mapper=CXRDatasetMapper(cfg, is_train=False)
        )

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str, output_folder: str | None = None):
        folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "eval", dataset_name)
        return COCOEvaluator(
            dataset_name, tasks=("bbox",), distributed=False, output_dir=folder,
            use_fast_impl=False,
        )

    def build_writers(self) -> list[EventWriter]:
        os.makedirs(self.cfg.OUTPUT_DIR, exist_ok=True)
        return [
            CommonMetricPrinter(self.max_iter),
            JSONWriter(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json")),
        ]

    def build_hooks(self) -> list[HookBase]:
        hooks = super().build_hooks()
        if self._progress is not None:
            hooks.append(ProgressHook(self._progress, self._progress_period))
        if self._publish is not None and self._publish_period > 0:
            hooks.append(PublishCheckpointHook(self._publish, self._publish_period))
        if self._heartbeat is not None:
            hooks.append(HeartbeatHook(self._heartbeat, self._heartbeat_seconds))
        return hooks
