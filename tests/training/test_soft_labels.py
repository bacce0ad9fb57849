"""Soft labels: the classifier's target is the consensus box's certainty, not 1."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from training.modeling import soft_target_loss


def test_full_certainty_is_exactly_the_standard_cross_entropy():
    torch.manual_seed(0)
    scores = torch.randn(12, 4)
    classes = torch.tensor([0, 1, 2, 3, 3, 0, 1, 3, 2, 3, 3, 0])  # 3 = background
    ones = torch.ones(12)
    assert soft_target_loss(scores, classes, ones).item() == pytest.approx(
        F.cross_entropy(scores, classes).item(), rel=1e-6)


def test_zero_certainty_makes_the_box_background_and_half_lies_between():
    torch.manual_seed(1)
    scores = torch.randn(6, 3)
    classes = torch.tensor([0, 1, 2, 2, 0, 1])  # 2 = background
    w0 = torch.tensor([0.0, 0.0, 0.7, 0.7, 0.0, 0.0])  # background weights are ignored
    as_bg = F.cross_entropy(scores, torch.full((6,), 2))
    assert soft_target_loss(scores, classes, w0).item() == pytest.approx(as_bg.item(), rel=1e-6)
    hard = F.cross_entropy(scores, classes).item()
    half = soft_target_loss(scores, classes, torch.full((6,), 0.5)).item()
    # cross-entropy is linear in the target: half-certain = the mean of the two extremes
    assert half == pytest.approx((hard + as_bg.item()) / 2, rel=1e-6)


def test_half_precision_scores_as_amp_gives_them_train_like_float32():
    """On a GPU the classifier's logits come out of autocast in float16 while the
    weights are float32: the loss must take them (and agree with float32)."""
    torch.manual_seed(2)
    scores = torch.randn(8, 3)
    classes = torch.tensor([0, 1, 2, 2, 0, 1, 2, 0])
    w = torch.tensor([0.9, 0.4, 1.0, 1.0, 0.6, 0.3, 1.0, 1.0])
    half = soft_target_loss(scores.half(), classes, w)
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(soft_target_loss(scores, classes, w).item(), rel=1e-2)


def test_a_doubtful_box_pulls_its_class_score_less_than_a_certain_one():
    scores = torch.zeros(2, 3, requires_grad=True)
    loss = soft_target_loss(scores, torch.tensor([0, 0]), torch.tensor([1.0, 0.3]))
    loss.backward()
    grad = scores.grad
    assert grad[0, 0] < grad[1, 0]  # the certain box raises class 0 more
    assert grad[1, 2] < 0 < grad[0, 2]  # the doubtful one also raises background


def test_empty_batch_gives_a_zero_loss_that_backpropagates():
    scores = torch.zeros((0, 3), requires_grad=True)
    loss = soft_target_loss(scores, torch.zeros(0, dtype=torch.long), torch.zeros(0))
    loss.backward()
    assert loss.item() == 0.0


def test_roi_heads_use_the_weights_only_when_soft_labels_are_on():
    import training.compat  # noqa: F401

    # isort: split
    from detectron2.modeling import build_model
    from detectron2.structures import Boxes, Instances
    from detectron2.utils.events import EventStorage

    from training.config import build_config

    def loss_cls(soft: bool, weight: float) -> float:
        cfg = build_config(2, preset="tiny", device="cpu")
        cfg.CXR.SOFT_LABELS = soft
        torch.manual_seed(0)
        model = build_model(cfg)
        model.train()
        inst = Instances((128, 128))
        inst.gt_boxes = Boxes(torch.tensor([[30.0, 30.0, 80.0, 90.0]]))
        inst.gt_classes = torch.tensor([1])
        inst.gt_weights = torch.tensor([weight])
        image = torch.full((3, 128, 128), 40.0)
        image[:, 30:90, 30:80] = 200.0
        torch.manual_seed(1)  # the same proposals are sampled each time
        with EventStorage(0):
            return model([{"image": image, "instances": inst}])["loss_cls"].item()

    hard = loss_cls(False, 0.2)
    assert loss_cls(True, 1.0) == pytest.approx(hard, rel=1e-5)
    assert loss_cls(True, 0.2) != pytest.approx(hard, rel=1e-3)
