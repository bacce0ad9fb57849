"""Model pieces: ROI heads whose detections carry their full class-probability vector.

Active learning scores (entropy, margin, ...) need, for every final detection,
the softmax over all ``K + 1`` classes (background last) that the box head
computed for its proposal.  Detectron2's ``fast_rcnn_inference`` keeps only the
winning class score, but it does return, per image, the index of the proposal
each kept detection came from.  ``ProbabilityOutputLayers`` overrides
``inference`` to use those indices and attach ``pred_probs`` (``(n, K + 1)``)
to the output ``Instances``; Instances fields survive Detectron2's rescaling
to original pixels (``detector_postprocess``), so they arrive at the caller
aligned with the boxes.

Detectron2 lets one proposal yield a detection for EVERY class whose
probability passes ``SCORE_THRESH_TEST`` (more recall for mAP), so a row's
class need not be its probability argmax.  ``cfg.CXR.ONE_CLASS_PER_BOX =
True`` keeps only each proposal's most probable foreground class (cleaner
pre-labels for readers: no stacked boxes of different classes); either way
``probs[i, classes[i]] == scores[i]``.

Soft labels (``cfg.CXR.SOFT_LABELS``): a consensus box carries how sure the
panel is that the finding is real (the reader model's posterior).  Training on
it as a hard positive teaches the model the panel's doubtful calls as
certain; instead the classifier's target for a proposal matched to a box of
weight ``w`` is ``w`` on the box's class and ``1 - w`` on background (a soft
target for the same cross-entropy, so ``w = 1`` everywhere is exactly the
standard loss).  Box regression is unchanged: where the finding is, if it is
one, does not depend on how sure the panel is.

``CXRROIHeads`` is ``StandardROIHeads`` with that predictor; the config names
it (``MODEL.ROI_HEADS.NAME = "CXRROIHeads"``), so every model built from our
config, by a trainer or for inference, has it.  Parameter names are those of
``StandardROIHeads``: checkpoints load into either.  Importing this module
registers the class; ``training.config`` users must import it before
``build_model`` (``training.detector`` and the trainer do).
"""

from __future__ import annotations

import torch

import training.compat  # noqa: F401  (patches libraries before detectron2 loads)

# isort: split
from detectron2.config import configurable
from detectron2.modeling import ROI_HEADS_REGISTRY, StandardROIHeads
from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers, fast_rcnn_inference
from detectron2.structures import Instances


class ProbabilityOutputLayers(FastRCNNOutputLayers):
    """``FastRCNNOutputLayers`` whose inference also returns per-detection probabilities."""

    @configurable
    def __init__(self, *, one_class_per_box: bool = False, soft_labels: bool = False,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.one_class_per_box = one_class_per_box
        self.soft_labels = soft_labels

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret["one_class_per_box"] = bool(cfg.CXR.ONE_CLASS_PER_BOX)
        ret["soft_labels"] = bool(cfg.CXR.SOFT_LABELS)
        return ret

    def losses(self, predictions, proposals):
        losses = super().losses(predictions, proposals)
        if not self.soft_labels or not any(p.has("gt_weights") for p in proposals):
            return losses
        scores = predictions[0]
        gt_classes = torch.cat([p.gt_classes for p in proposals])
        weights = torch.cat([p.gt_weights if p.has("gt_weights") else
                             torch.ones(len(p), device=scores.device) for p in proposals])
        losses["loss_cls"] = soft_target_loss(scores, gt_classes, weights) * \
            self.loss_weight.get("loss_cls", 1.0)
        return losses

    def inference(
        self, predictions: tuple[torch.Tensor, torch.Tensor], proposals: list[Instances]
    ) -> tuple[list[Instances], list[torch.Tensor]]:
        boxes = self.predict_boxes(predictions, proposals)
        probs = self.predict_probs(predictions, proposals)
        shapes = [p.image_size for p in proposals]
        ranked = [_argmax_only(p) for p in probs] if self.one_class_per_box else probs
        results, kept = fast_rcnn_inference(
            boxes, ranked, shapes, self.test_score_thresh, self.test_nms_thresh,
            self.test_topk_per_image,
        )
        for inst, idx, b, p in zip(results, kept, boxes, probs, strict=True):
            # fast_rcnn_inference drops non-finite rows before indexing: mirror it.
            valid = torch.isfinite(b).all(dim=1) & torch.isfinite(p).all(dim=1)
            inst.pred_probs = p[valid][idx]
        return results, kept


def soft_target_loss(scores: torch.Tensor, gt_classes: torch.Tensor,
                     weights: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy against ``w`` on the class and ``1 - w`` on background.

    ``scores``: ``(R, K + 1)`` logits (background last); ``gt_classes``: ``(R,)``,
    ``K`` for background proposals (their weight is ignored: background is
    certain); ``weights``: ``(R,)`` in [0, 1].
    """
    if scores.numel() == 0:
        return scores.sum() * 0.0
    scores = scores.float()  # float16 under AMP: the soft targets and the loss in float32
    bg = scores.shape[1] - 1
    w = torch.where(gt_classes == bg, torch.ones_like(weights), weights.clamp(0.0, 1.0))
    target = torch.zeros_like(scores)
    rows = torch.arange(len(scores), device=scores.device)
    target[rows, gt_classes] = w
    target[:, bg] += 1.0 - w
    return -(target * torch.log_softmax(scores, dim=1)).sum(dim=1).mean()


def _argmax_only(probs: torch.Tensor) -> torch.Tensor:
    """Zero every foreground column but each row's largest (background column kept)."""
    fg = probs[:, :-1]
    mask = torch.zeros_like(fg, dtype=torch.bool)
    mask.scatter_(1, fg.argmax(dim=1, keepdim=True), True)
    return torch.cat([fg * mask, probs[:, -1:]], dim=1)


@ROI_HEADS_REGISTRY.register()
class CXRROIHeads(StandardROIHeads):
    """``StandardROIHeads`` with ``ProbabilityOutputLayers`` as the box predictor."""

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        ret = super()._init_box_head(cfg, input_shape)
        ret["box_predictor"] = ProbabilityOutputLayers(cfg, ret["box_head"].output_shape)
        return ret


__all__ = ["CXRROIHeads", "ProbabilityOutputLayers"]
