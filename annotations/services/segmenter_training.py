"""The mask model's data and gold evaluation, for training runs with ``"task":
"segmenter"`` (``services.training`` runs them through the same lifecycle, registry and
promotion as the detector and the classifier).

Final masks, per image: the adjudicator's, when their decision painted any (an
adjudication about boxes need not repaint the lungs), else the image's consensus masks
from the most recent finished run that merged masks for it.  A class absent from an
image's final masks is absent (all readers said so, or the consensus found nothing).
Targets are ``(C, H, W)`` in the project's mask-class order, read from storage per
batch.  Gold metrics: Dice and 95th-percentile Hausdorff per class, by MONAI
(``training.segmenter_metrics``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from annotations.errors import DomainError
from annotations.models import (
    AnnotationMask,
    ConsensusMask,
    ConsensusRun,
    Image,
    MaskClass,
    ModelVersion,
    Project,
)
from annotations.services.adjudication import adjudicated_images
from annotations.services.classifier_training import LazyDisplays
from annotations.services.storage import mask_read, model_dir


def mask_class_names(project: Project) -> list[str]:
    return list(MaskClass.objects.filter(project=project).order_by("index")
                .values_list("name", flat=True))


def final_masks(project: Project, images: Sequence[Image] | None = None
                ) -> dict[str, dict[str, str]]:
    """image pseudo id -> {mask class name: stored path} of its final masks."""
    rows = (ConsensusMask.objects
            .filter(consensus_image__run__project=project,
                    consensus_image__run__status=ConsensusRun.Status.DONE)
            .select_related("consensus_image__image", "mask_class")
            .order_by("consensus_image__image_id", "-consensus_image__run_id"))
    if images is not None:
        rows = rows.filter(consensus_image__image__in=list(images))
    out: dict[str, dict[str, str]] = {}
    latest_run: dict[str, int] = {}
    for row in rows:
        pid, run_id = row.consensus_image.image.pseudo_id, row.consensus_image.run_id
        if latest_run.setdefault(pid, run_id) == run_id:
            out.setdefault(pid, {})[row.mask_class.name] = row.path
    decided = adjudicated_images(project)
    if images is not None:  # one image's viewer reads that image's decision only
        wanted_ids = {i.pk for i in images}
        decided = {k: v for k, v in decided.items() if k in wanted_ids}
    painted = AnnotationMask.objects.filter(annotation__in=list(decided.values())) \
        .select_related("annotation__image", "mask_class")
    by_image: dict[str, dict[str, str]] = {}
    for m in painted:
        by_image.setdefault(m.annotation.image.pseudo_id, {})[m.mask_class.name] = m.path
    out.update(by_image)  # an adjudicator's painted masks replace the consensus's
    return out


class _Targets(Sequence):
    """``(C, H, W)`` final masks of ``images``, read from storage when indexed."""

    def __init__(self, images: Sequence[Image], masks: Mapping[str, Mapping[str, str]],
                 names: Sequence[str]) -> None:
        self.images, self.masks, self.names = list(images), masks, list(names)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        image = self.images[index]
        have = self.masks.get(image.pseudo_id, {})
        empty = np.zeros((image.height, image.width), bool)
        return np.stack([mask_read(have[n]) if n in have else empty for n in self.names])


def segmenter_gold_report(*, version: ModelVersion) -> dict[str, Any]:
    """The segmenter version's gold-set metrics (its files must exist)."""
    from training.segmenter import Segmenter
    from training.segmenter_metrics import segmenter_metrics

    project = version.project
    gold = list(Image.objects.filter(project=project, is_gold=True).order_by("pseudo_id"))
    masks = final_masks(project, gold)
    gold = [i for i in gold if i.pseudo_id in masks]
    if not gold:
        raise DomainError("no_gold_set", "the project has no gold images with final masks")
    model = Segmenter.from_dir(model_dir(version.name),
                               expected_sha256=version.sha256)
    names = mask_class_names(project)
    if names != model.class_names:
        raise DomainError("invalid_model", "the segmenter's classes are not the project's")
    truth = _Targets(gold, masks, names)
    probs = [_to_original(p, image) for p, image in
             zip(model.predict(LazyDisplays(gold)), gold, strict=True)]
    report = segmenter_metrics([truth[i] for i in range(len(gold))], probs, names)
    report["gold_images"] = len(gold)
    return report


def _to_original(probs: np.ndarray, image: Image) -> np.ndarray:
    """Display-size probabilities at the image's original size (masks are stored there)."""
    if probs.shape[1:] == (image.height, image.width):
        return probs
    return np.stack([cv2.resize(c, (image.width, image.height), interpolation=cv2.INTER_LINEAR)
                     for c in probs])


def segmentation_images(project: Project, images: Sequence[Image]) -> list[Image]:
    """The images among ``images`` that have final masks."""
    masks = final_masks(project, images)
    return [i for i in images if i.pseudo_id in masks]


def train_segmenter_model(*, params: Mapping[str, Any], project: Project,
                          images: Sequence[Image], report):
    """Train on ``images`` (display derivatives, final masks); returns ``(model, cfg)``.
    ``report(progress)`` is the run's heartbeat and may stop the training."""
    from training.segmenter import segmenter_config, train_segmenter

    names = mask_class_names(project)
    if not names:
        raise DomainError("no_mask_classes", "the project has no mask classes to segment",
                          status=400)
    images = segmentation_images(project, images)
    if not images:
        raise DomainError("no_training_data", "no image outside the gold set has final masks")
    cfg = segmenter_config(names, preset=params["preset"])
    model = train_segmenter(
        cfg, LazyDisplays(images), _Targets(images, final_masks(project, images), names),
        max_iter=int(params["max_iter"]), batch_size=int(params["ims_per_batch"]),
        base_lr=params.get("base_lr"), seed=params.get("seed"), progress=report,
        progress_period=max(1, int(params["max_iter"]) // 50))
    return model, cfg, images
