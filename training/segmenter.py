"""The mask model: a MONAI U-Net predicting every mask class of a project per film.

``monai.networks.nets.UNet`` (2-D, one input channel, one output channel per mask
class, residual units), trained with MONAI's Dice + cross-entropy loss on sigmoid
outputs: structures are separate channels, not exclusive classes, because a finding's
extent may lie inside an anatomical structure.  ``unet`` is the working preset (512 px,
five levels); ``tiny`` the same network at toy width, so the training-run machinery,
gold evaluation and pre-labels run on CPU in the tests.

Films are resized to a square ``INPUT_SIZE`` for the network and predictions resized back
to the film's own pixels; masks likewise (nearest neighbour) for training.  Versions are
written and verified like the other kinds (``training.artifacts``), with
``CXR.TASK = "segmenter"``.  No Django.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from monai.losses import DiceCELoss
from monai.networks.nets import UNet
from torch import nn

import training.compat  # noqa: F401  (patches libraries before detectron2 loads)

# isort: split
from detectron2.config import CfgNode

from annotations.errors import DomainError
from training.artifacts import load_task_version, save_model_version
from training.config import empty_config
from training.inputs import to_model_image
from training.loop import Progress, generator_for, train_loop

PRESETS = {
    "unet": {"input_size": 512, "lr": 1e-3, "channels": [32, 64, 128, 256, 512],
             "strides": [2, 2, 2, 2]},
    "tiny": {"input_size": 64, "lr": 1e-2, "channels": [8, 16, 32], "strides": [2, 2]},
}


def segmenter_config(class_names: Sequence[str], preset: str = "unet",
                     input_size: int | None = None) -> CfgNode:
    if preset not in PRESETS:
        raise DomainError("invalid_params", f"unknown segmenter preset {preset!r}",
                          detail=sorted(PRESETS))
    if not class_names:
        raise DomainError("invalid_params", "a segmenter needs at least one mask class")
    p = PRESETS[preset]
    cfg = empty_config()
    cfg.CXR.TASK = "segmenter"
    cfg.CXR.PRESET = preset
    cfg.CXR.SEGMENTER.CLASS_NAMES = list(class_names)
    cfg.CXR.SEGMENTER.INPUT_SIZE = int(input_size or p["input_size"])
    cfg.CXR.SEGMENTER.BASE_LR = float(p["lr"])
    cfg.CXR.SEGMENTER.CHANNELS = list(p["channels"])
    cfg.CXR.SEGMENTER.STRIDES = list(p["strides"])
    return cfg


def build_segmenter(cfg: CfgNode) -> nn.Module:
    s = cfg.CXR.SEGMENTER
    return UNet(spatial_dims=2, in_channels=1, out_channels=len(s.CLASS_NAMES),
                channels=tuple(s.CHANNELS), strides=tuple(s.STRIDES), num_res_units=1)


def prepare(image: np.ndarray, size: int) -> torch.Tensor:
    """Radiograph pixels -> ``(1, size, size)`` float tensor in 0..1."""
    gray = to_model_image(image)[:, :, 0]
    return torch.from_numpy(cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA)
                            / 255.0).float()[None]


def prepare_masks(masks: np.ndarray, size: int) -> torch.Tensor:
    """``(C, H, W)`` bool masks -> ``(C, size, size)`` float targets."""
    return torch.from_numpy(np.stack([
        cv2.resize(m.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)
        for m in np.asarray(masks)]).astype(np.float32))


def train_segmenter(
    cfg: CfgNode, images: Sequence[np.ndarray], masks: Sequence[np.ndarray], *,
    max_iter: int, batch_size: int = 4, base_lr: float | None = None,
    seed: int | None = None, progress: Callable[[Progress], None] | None = None,
    progress_period: int = 10,
) -> nn.Module:
    """Train on films and their ``(C, H, W)`` masks (both sequences may load lazily:
    one batch is in memory at a time); returns the model in eval mode.  ``progress``
    may raise to stop the training (a cancelled or lost run)."""
    if len(images) != len(masks) or not len(images):
        raise DomainError("no_training_data", "no film with final masks to train on")
    generator = generator_for(seed)
    model = build_segmenter(cfg)
    size = int(cfg.CXR.SEGMENTER.INPUT_SIZE)
    return train_loop(
        model, len(images),
        lambda batch: (torch.stack([prepare(images[int(j)], size) for j in batch]),
                       torch.stack([prepare_masks(masks[int(j)], size) for j in batch])),
        DiceCELoss(sigmoid=True, squared_pred=True),
        lr=base_lr or cfg.CXR.SEGMENTER.BASE_LR, max_iter=max_iter, batch_size=batch_size,
        generator=generator, progress=progress, progress_period=progress_period)


class Segmenter:
    """A published mask model: per-class probability maps in the film's own pixels."""

    def __init__(self, model: nn.Module, cfg: CfgNode, digest: str = "") -> None:
        self.model, self.cfg, self.digest = model.eval(), cfg, digest
        self.class_names = list(cfg.CXR.SEGMENTER.CLASS_NAMES)
        self.input_size = int(cfg.CXR.SEGMENTER.INPUT_SIZE)

    @classmethod
    def from_dir(cls, directory: str | Path, expected_sha256: str | None = None) -> Segmenter:
        model, files = load_task_version(directory, expected_sha256, "segmenter", build_segmenter)
        return cls(model, files.cfg, files.digest)

    @torch.no_grad()
    def predict(self, images: Sequence[np.ndarray], batch_size: int = 8
                ) -> list[np.ndarray]:
        """Per film, ``(C, H, W)`` float32 probabilities at the film's own size."""
        out: list[np.ndarray] = []
        for start in range(0, len(images), batch_size):
            chunk = [images[j] for j in range(start, min(start + batch_size, len(images)))]
            x = torch.stack([prepare(im, self.input_size) for im in chunk])
            probs = torch.sigmoid(self.model(x)).numpy()
            for im, p in zip(chunk, probs, strict=True):
                h, w = np.asarray(im).shape[:2]
                out.append(np.stack([cv2.resize(c, (w, h), interpolation=cv2.INTER_LINEAR)
                                     for c in p]).astype(np.float32))
        return out


def save_segmenter(model: nn.Module, cfg: CfgNode, out_dir: str | Path) -> tuple[Path, str]:
    """Write the version folder; returns (weights path, version digest)."""
    return save_model_version(model, cfg, out_dir)
