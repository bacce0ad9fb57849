"""Config presets build complete Faster R-CNN models on CPU, without the model zoo."""

from __future__ import annotations

import pytest
import torch
import yaml

from training.artifacts import config_from_yaml
from training.config import ROI_HEADS_NAME, build_config, default_device


@pytest.mark.parametrize("preset", ["tiny", "r50_fpn"])
def test_preset_builds_model_on_cpu(preset):
    from detectron2.modeling import build_model

    import training.modeling  # noqa: F401  (registers CXRROIHeads; compat came with config)

    cfg = build_config(3, preset=preset, class_names=["a", "b", "c"], device="cpu")
    model = build_model(cfg)
    assert type(model.roi_heads).__name__ == ROI_HEADS_NAME
    assert model.roi_heads.box_predictor.cls_score.out_features == 4  # 3 classes + background
    norms = {type(m).__name__ for m in model.backbone.modules()}
    assert "GroupNorm" in norms and "FrozenBatchNorm2d" not in norms
    assert all(p.requires_grad for p in model.backbone.parameters())  # nothing frozen
    assert next(model.parameters()).device == torch.device("cpu")
    if preset == "tiny":
        assert sum(p.numel() for p in model.parameters()) < 15_000_000


def test_scratch_and_pretrained_differ_in_norm_and_freezing():
    scratch = build_config(2, device="cpu")
    pretrained = build_config(2, weights="/models/R-50.pkl", device="cpu")
    assert (scratch.MODEL.RESNETS.NORM, scratch.MODEL.BACKBONE.FREEZE_AT) == ("GN", 0)
    assert (pretrained.MODEL.RESNETS.NORM, pretrained.MODEL.BACKBONE.FREEZE_AT) == ("FrozenBN", 2)
    assert pretrained.MODEL.WEIGHTS == pretrained.CXR.INITIAL_WEIGHTS == "/models/R-50.pkl"
    assert scratch.MODEL.WEIGHTS == "" and scratch.SOLVER.BASE_LR < pretrained.SOLVER.BASE_LR


def test_platform_settings():
    cfg = build_config(14, preset="tiny")
    assert cfg.MODEL.DEVICE == default_device()
    assert cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS is False  # "No finding" films stay
    assert cfg.INPUT.RANDOM_FLIP == "none"
    assert cfg.CXR.INPUT_FORMAT == "GRAY3" and cfg.CXR.CLASS_NAMES == [str(i) for i in range(14)]
    assert cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE == [False] * 4


def test_config_round_trips_through_yaml():
    cfg = build_config(2, preset="tiny", class_names=["x", "y"], device="cpu")
    loaded = config_from_yaml(cfg.dump())
    assert yaml.safe_load(loaded.dump()) == yaml.safe_load(cfg.dump())


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        build_config(2, preset="r101")
    with pytest.raises(ValueError):
        build_config(2, class_names=["only one"])
