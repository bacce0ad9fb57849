"""The image-level classifier: multi-label findings per film, from torchvision's DenseNet.

DenseNet-121 is the backbone chest radiograph classification work uses (CheXNet and
its successors); ``tiny`` is the same architecture at toy width and depth, so the
training-run machinery, evaluation and promotion are exercised on CPU in the tests.
The head is one logit per class (the project's findings, box classes as "present
anywhere on the film", and "No finding"), trained with binary cross-entropy: labels
are not exclusive.

A version is written like a detector's (``training.artifacts``: config, weights,
manifest; verified before parsing), its config a Detectron2 ``CfgNode`` with
``CXR.TASK = "classifier"`` and the classifier's keys under ``CXR.CLASSIFIER``, so the
registry, checksums and safe loading are the same code for both kinds.

Pixels go through ``training.inputs.to_model_image`` (the detector's own input path),
then a square resize to ``CXR.CLASSIFIER.INPUT_SIZE``.  No Django.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn
from torchvision.models import DenseNet, densenet121

import training.compat  # noqa: F401  (patches libraries before detectron2 loads)

# isort: split
from detectron2.config import CfgNode

from annotations.errors import DomainError
from training.artifacts import load_task_version, save_model_version
from training.config import empty_config
from training.inputs import to_model_image
from training.loop import Progress, generator_for, train_loop

#: presets: torchvision's DenseNet-121, and a toy DenseNet for tests and CPU demos
PRESETS = {
    "densenet121": {"input_size": 512, "lr": 1e-4},
    "tiny": {"input_size": 64, "lr": 3e-3},
}
#: ImageNet statistics (DenseNet-121's pretrained weights expect them), in 0..255
_MEAN, _STD = 0.449 * 255, 0.226 * 255


def classifier_config(class_names: Sequence[str], preset: str = "densenet121",
                      input_size: int | None = None) -> CfgNode:
    if preset not in PRESETS:
        raise DomainError("invalid_params", f"unknown classifier preset {preset!r}",
                          detail=sorted(PRESETS))
    cfg = empty_config()
    cfg.CXR.TASK = "classifier"
    cfg.CXR.PRESET = preset
    cfg.CXR.CLASSIFIER.CLASS_NAMES = list(class_names)
    cfg.CXR.CLASSIFIER.INPUT_SIZE = int(input_size or PRESETS[preset]["input_size"])
    cfg.CXR.CLASSIFIER.BASE_LR = float(PRESETS[preset]["lr"])
    return cfg


def build_classifier(cfg: CfgNode) -> nn.Module:
    n = len(cfg.CXR.CLASSIFIER.CLASS_NAMES)
    if n < 1:
        raise DomainError("invalid_params", "a classifier needs at least one class")
    if cfg.CXR.PRESET == "tiny":
        return DenseNet(growth_rate=8, block_config=(2, 2), num_init_features=16, bn_size=2,
                        num_classes=n)
    model = densenet121(weights=None)
    model.classifier = nn.Linear(model.classifier.in_features, n)
    return model


def prepare(image: np.ndarray, size: int) -> torch.Tensor:
    """Radiograph pixels -> normalised ``(3, size, size)`` float tensor."""
    arr = cv2.resize(to_model_image(image), (size, size), interpolation=cv2.INTER_AREA)
    return torch.from_numpy((arr - _MEAN) / _STD).permute(2, 0, 1).float()


def train_classifier(
    cfg: CfgNode, images: Sequence[np.ndarray], targets: np.ndarray, *, max_iter: int,
    batch_size: int = 8, base_lr: float | None = None, seed: int | None = None,
    progress: Callable[[Progress], None] | None = None, progress_period: int = 10,
    init: nn.Module | None = None,
) -> nn.Module:
    """Train on ``images`` with 0/1 ``targets`` ``(N, C)``; returns the model (eval mode).

    ``images``: any sequence of films (``len`` and indexing), read when a batch needs
    them, so a lazy sequence over files keeps memory to one batch.

    ``progress`` is called every ``progress_period`` iterations and at the end; it may
    raise to stop the training (a cancelled or lost run).  Positive classes are
    weighted by their rarity (``pos_weight``), as chest X-ray findings are rare.
    """
    targets = np.asarray(targets, dtype=np.float32)
    if len(images) != len(targets) or not len(images):
        raise DomainError("no_training_data", "no labelled image to train the classifier on")
    generator = generator_for(seed)
    model = init if init is not None else build_classifier(cfg)
    size = int(cfg.CXR.CLASSIFIER.INPUT_SIZE)
    # films are prepared per batch, never all at once: a project's films do not fit in
    # memory as tensors (18,000 at 512 px would be 56 GB); ``images`` may load lazily
    y = torch.from_numpy(targets)
    positives = y.sum(0)
    pos_weight = ((len(y) - positives) / positives.clamp(min=1.0)).clamp(1.0, 20.0)
    return train_loop(
        model, len(images),
        lambda batch: (torch.stack([prepare(images[int(j)], size) for j in batch]), y[batch]),
        nn.BCEWithLogitsLoss(pos_weight=pos_weight),
        lr=base_lr or cfg.CXR.CLASSIFIER.BASE_LR, max_iter=max_iter, batch_size=batch_size,
        generator=generator, progress=progress, progress_period=progress_period)


class Classifier:
    """A published classifier version: probabilities per class for radiographs."""

    def __init__(self, model: nn.Module, cfg: CfgNode, digest: str = "") -> None:
        self.model, self.cfg, self.digest = model.eval(), cfg, digest
        self.class_names = list(cfg.CXR.CLASSIFIER.CLASS_NAMES)
        self.input_size = int(cfg.CXR.CLASSIFIER.INPUT_SIZE)

    @classmethod
    def from_dir(cls, directory: str | Path, expected_sha256: str | None = None) -> Classifier:
        model, files = load_task_version(directory, expected_sha256, "classifier", build_classifier)
        return cls(model, files.cfg, files.digest)

    @torch.no_grad()
    def predict(self, images: Sequence[np.ndarray], batch_size: int = 16) -> np.ndarray:
        """``(N, C)`` probabilities, columns in ``class_names`` order."""
        out = []
        for start in range(0, len(images), batch_size):
            x = torch.stack([prepare(im, self.input_size)
                             for im in images[start:start + batch_size]])
            out.append(torch.sigmoid(self.model(x)).numpy())
        n = len(self.class_names)
        return np.concatenate(out).astype(np.float64) if out else np.zeros((0, n))


def save_classifier(model: nn.Module, cfg: CfgNode, out_dir: str | Path) -> tuple[Path, str]:
    """Write the version folder; returns (weights path, version digest)."""
    return save_model_version(model, cfg, out_dir)

