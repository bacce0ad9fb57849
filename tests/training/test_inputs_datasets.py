"""Pixel preparation and COCO dataset registration."""

from __future__ import annotations

import numpy as np
import pytest

import training.compat  # noqa: F401  (before any detectron2 import in this module)
from annotations.errors import DomainError
from tests.training.films import CLASS_NAMES, LESION_CLASS, film, write_coco
from training.inputs import to_model_image


def test_gray_uint16_and_three_channel_films_prepare_identically():
    img = film(0)
    base = to_model_image(img)
    assert base.shape == (*img.shape, 3) and base.dtype == np.float32
    np.testing.assert_allclose(to_model_image(img.astype(np.uint16) * 257), base, atol=1e-3)
    np.testing.assert_array_equal(to_model_image(np.dstack([img] * 3)), base)
    np.testing.assert_array_equal(base[..., 0], img)


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.float32), np.zeros((4, 4, 2), np.uint8)])
def test_rejects_unsupported_pixels(bad):
    with pytest.raises(DomainError):
        to_model_image(bad)


def test_registered_dataset_keeps_no_finding_images(tmp_path):
    from detectron2.data import DatasetCatalog, MetadataCatalog, get_detection_dataset_dicts

    from training.datasets import register_coco_dataset

    register_coco_dataset("test_register", write_coco(tmp_path), tmp_path)
    register_coco_dataset("test_register", write_coco(tmp_path), tmp_path)  # replace is fine
    dicts = DatasetCatalog.get("test_register")
    assert [d["image_key"] for d in dicts] == ["img-lesion", "img-normal"]
    assert dicts[1]["annotations"] == []
    assert dicts[0]["annotations"][0]["category_id"] == LESION_CLASS
    assert MetadataCatalog.get("test_register").thing_classes == CLASS_NAMES
    # What the training loader sees with our config's filter setting:
    assert len(get_detection_dataset_dicts(["test_register"], filter_empty=False)) == 2
    with pytest.raises(DomainError):
        register_coco_dataset("test_register", tmp_path / "train.json", tmp_path, replace=False)


def test_mapper_prepares_training_records(tmp_path):
    from detectron2.data import DatasetCatalog

    from training.config import build_config
    from training.datasets import register_coco_dataset
    from training.mapper import CXRDatasetMapper

    register_coco_dataset("test_mapper", write_coco(tmp_path), tmp_path)
    cfg = build_config(2, preset="tiny", device="cpu")
    lesion, normal = (CXRDatasetMapper(cfg)(d) for d in DatasetCatalog.get("test_mapper"))
    assert tuple(lesion["image"].shape) == (3, 128, 128)
    assert lesion["instances"].gt_classes.tolist() == [LESION_CLASS]
    assert len(normal["instances"]) == 0


def test_radiograph_augmentations_keep_boxes_on_the_lesion(tmp_path):
    from detectron2.data import DatasetCatalog

    from training.config import build_config
    from training.datasets import register_coco_dataset
    from training.mapper import CXRDatasetMapper, radiograph_augmentations

    register_coco_dataset("test_aug", write_coco(tmp_path), tmp_path)
    cfg = build_config(2, preset="tiny", device="cpu")
    names = [type(a).__name__ for a in radiograph_augmentations(cfg)]
    assert names == ["RandomBrightness", "RandomContrast", "RandomRotation"]  # no flip
    cfg.CXR.AUG_FLIP = True
    assert "RandomFlip" in [type(a).__name__ for a in radiograph_augmentations(cfg)]
    cfg.CXR.AUG_FLIP, cfg.CXR.AUG_ROTATION = False, 10.0
    lesion = DatasetCatalog.get("test_aug")[0]
    np.random.seed(0)
    images = []
    for _ in range(4):
        out = CXRDatasetMapper(cfg)(lesion)
        box = out["instances"].gt_boxes.tensor[0].numpy()
        assert (box >= 0).all() and (box <= 128).all()
        # the box still covers the bright lesion after rotation/exposure changes
        x1, y1, x2, y2 = box.round().astype(int)
        inside = out["image"][0, y1:y2, x1:x2].float().mean()
        assert inside > out["image"][0].float().mean() + 20
        images.append(out["image"].numpy())
    assert any(not np.array_equal(images[0], im) for im in images[1:])
    cfg.CXR.AUGMENT = False
    assert radiograph_augmentations(cfg) == []
