"""An in-memory learner for active-learning replays: train, keep checkpoints, predict.

The platform's training runs export COCO, write versions and register them;
that is what a project needs, but an AL replay that repeats over seeds trains
dozens of models on a few hundred films, and the bookkeeping would cost more
than the learning.  This learner trains the same Detectron2 model (the
``build_config`` preset, ``CXRDatasetMapper`` with its augmentations, GroupNorm
from random init) in a plain loop over dataset dicts, keeps the weights in
memory, and hands out ``Detector`` objects built from those weights, so
scoring and evaluation go through the exact inference path of the platform.

Warm start: ``fit(..., init=previous.weights)`` continues from an earlier
model, as a deployed AL loop fine-tunes the model it has; a replay that
retrains from scratch at a fixed iteration count sees its curves *fall* as
labels grow (fewer passes per image), which says nothing about the labels.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import training.compat  # noqa: F401  (before anything from Detectron2)
import training.modeling  # noqa: F401  (registers the platform's ROI heads)

# isort: split
import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from training.config import build_config
from training.detector import Detector
from training.mapper import CXRDatasetMapper


@dataclass(frozen=True)
class Fitted:
    """The weights after training and the checkpoints kept on the way (oldest first)."""

    weights: bytes
    checkpoints: tuple[bytes, ...]
    iterations: int


def _state_bytes(model: torch.nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.save({"model": {k: v.detach().cpu().clone() for k, v in
                          model.state_dict().items()}}, buf)
    return buf.getvalue()


class ReplayLearner:
    """One Detectron2 preset, trained in memory on ``{"file_name", "annotations", ...}`` dicts.

    ``records``: Detectron2 dataset dicts (``file_name``, ``height``, ``width``,
    ``annotations`` with ``bbox`` in XYXY_ABS and ``category_id``), as the
    platform's COCO loader yields them.
    """

    def __init__(self, class_names: Sequence[str], *, preset: str = "tiny",
                 min_size: int | None = None, device: str = "cpu") -> None:
        cfg = build_config(len(class_names), preset=preset, device=device,
                           class_names=list(class_names))
        if min_size:
            cfg.INPUT.MIN_SIZE_TRAIN = (int(min_size),)
            cfg.INPUT.MIN_SIZE_TEST = int(min_size)
        cfg.freeze()
        self.cfg: CfgNode = cfg
        self.mapper = CXRDatasetMapper(cfg, is_train=True)

    def fit(self, records: Sequence[dict[str, Any]], *, iterations: int, seed: int,
            init: bytes | None = None, base_lr: float | None = None,
            batch: int | None = None, checkpoints: int = 0) -> Fitted:
        """SGD with warm-up, x0.1 for the last fifth; ``checkpoints`` evenly spaced snapshots.

        The batch order and augmentations come from ``seed`` alone, so two fits
        on the same records from the same ``init`` are the same fit.
        """
        if not records:
            raise ValueError("nothing to train on")
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        model = build_model(self.cfg)
        if init is not None:
            state = torch.load(io.BytesIO(init), map_location="cpu", weights_only=True)
            model.load_state_dict(state["model"], strict=True)
        model.train()
        lr = float(base_lr if base_lr is not None else self.cfg.SOLVER.BASE_LR)
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9,
                              weight_decay=float(self.cfg.SOLVER.WEIGHT_DECAY))
        size = int(batch or self.cfg.SOLVER.IMS_PER_BATCH)
        warmup = max(1, min(int(self.cfg.SOLVER.WARMUP_ITERS), iterations // 5))
        marks = {round(iterations * (j + 1) / (checkpoints + 1)) for j in range(checkpoints)}
        kept: list[bytes] = []
        with EventStorage(0) as storage:
            for it in range(iterations):
                factor = min(1.0, (it + 1) / warmup) * (0.1 if it >= 0.8 * iterations else 1.0)
                for group in opt.param_groups:
                    group["lr"] = lr * factor
                picks = rng.choice(len(records), size=size, replace=len(records) < size)
                # Detectron2's transforms draw from NumPy's global generator
                np.random.seed(int(rng.integers(2**31)))
                losses = model([self.mapper(records[int(j)]) for j in picks])
                loss = sum(losses.values())
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"training diverged at iteration {it}")
                opt.zero_grad()
                loss.backward()
                opt.step()
                storage.iter = it + 1
                if it + 1 in marks:
                    kept.append(_state_bytes(model))
        return Fitted(weights=_state_bytes(model), checkpoints=tuple(kept),
                      iterations=iterations)

    def detector(self, weights: bytes, *, score_thresh: float = 0.01,
                 batch_size: int = 8) -> Detector:
        """The platform's ``Detector`` on these weights (low threshold: AL reads doubt)."""
        cfg = self.cfg.clone()
        cfg.defrost()
        cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = float(score_thresh)
        return Detector(cfg, weights, device=str(cfg.MODEL.DEVICE), batch_size=batch_size)
