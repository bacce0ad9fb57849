"""Dataset dict -> model input for training and evaluation loaders.

Detectron2's ``DatasetMapper`` reads images with PIL in 8-bit colour; ours
reads with the bit depth kept and prepares pixels with
``training.inputs.to_model_image``, the same function ``Detector.predict``
uses, then applies Detectron2's own resize augmentation and annotation
transforms.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

import training.compat  # noqa: F401  (patches libraries before detectron2 loads)

# isort: split
from detectron2.config import CfgNode
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from training.inputs import read_image, to_model_image


def radiograph_augmentations(cfg: CfgNode) -> list[T.Augmentation]:
    """Exposure, small rotation and (optionally) flip; boxes follow the transforms."""
    if not cfg.CXR.AUGMENT:
        return []
    k = float(cfg.CXR.AUG_INTENSITY)
    augs: list[T.Augmentation] = [T.RandomBrightness(1 - k, 1 + k),
                                  T.RandomContrast(1 - k, 1 + k)]
    if cfg.CXR.AUG_ROTATION > 0:
        angle = float(cfg.CXR.AUG_ROTATION)
        augs.append(T.RandomRotation([-angle, angle], expand=False))
    if cfg.CXR.AUG_FLIP:
        augs.append(T.RandomFlip(horizontal=True, vertical=False))
    return augs


class CXRDatasetMapper:
    """Callable mapping one dataset dict to ``{"image": CHW float tensor, "instances", ...}``."""

    def __init__(self, cfg: CfgNode, is_train: bool = True) -> None:
        self.is_train = is_train
        self.soft_labels = bool(cfg.CXR.SOFT_LABELS)
        augs = utils.build_augmentation(cfg, is_train)
        if is_train:
            augs += radiograph_augmentations(cfg)
        self.augmentations = T.AugmentationList(augs)

    def __call__(self, dataset_dict: dict[str, Any]) -> dict[str, Any]:
        record = copy.deepcopy(dataset_dict)
        image = to_model_image(read_image(record["file_name"]))
        utils.check_image_size(record, image)
        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        shape = image.shape[:2]
        record["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        annotations = record.pop("annotations", [])
        if not self.is_train:
            return record
        annos = [
            utils.transform_instance_annotations(a, transforms, shape)
            for a in annotations
            if not a.get("iscrowd", 0)
        ]
        instances = utils.annotations_to_instances(annos, shape)
        if self.soft_labels:  # filtered below together with the boxes
            instances.gt_weights = torch.tensor([float(a.get("weight", 1.0)) for a in annos],
                                                dtype=torch.float32)
        record["instances"] = utils.filter_empty_instances(instances)
        return record
