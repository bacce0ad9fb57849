"""Label Studio's brush code and polygons <-> pixel masks, and the mask controls of the
generated labeling config; every bound is tried before anything is expanded."""

from __future__ import annotations

import numpy as np
import pytest

from annotations.errors import DomainError
from annotations.label_studio import masks as M
from annotations.label_studio.config import label_config, parse_label_config, validate_label_config
from annotations.taxonomy import build_mask_classes, mask_preset, preset


def _blob(h=120, w=160, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m = np.zeros((h, w), bool)
    for _ in range(4):
        y, x = rng.integers(10, h - 10), rng.integers(10, w - 10)
        yy, xx = np.ogrid[:h, :w]
        m |= (yy - y) ** 2 + (xx - x) ** 2 < rng.integers(5, 30) ** 2
    return m


def test_brush_code_round_trips_exactly():
    for seed in range(5):
        m = _blob(seed=seed)
        assert (M.rle_to_mask(M.mask_to_rle(m), 160, 120) == m).all()


def test_brush_region_round_trips_through_region_mask():
    m = _blob()
    item = M.brush_region(m, "Heart")
    assert item["type"] == "brushlabels" and item["original_width"] == 160
    label, back = M.region_mask(item, {"Heart"})
    assert label == "Heart" and (back == m).all()


def test_a_code_for_another_canvas_size_is_refused_before_decoding():
    rle = M.mask_to_rle(_blob())
    with pytest.raises(DomainError, match="canvas needs"):
        M.rle_to_mask(rle, 161, 120)


def test_oversized_canvas_and_overlong_code_are_refused():
    with pytest.raises(DomainError, match="exceeds"):
        M.rle_to_mask([0] * 10, 5000, 5000)
    with pytest.raises(DomainError, match="longer than its canvas"):
        M.rle_to_mask([0] * 1000, 10, 10)
    with pytest.raises(DomainError, match="non-byte"):
        M.rle_to_mask(["x", 1, 2, 3, 4], 10, 10)
    with pytest.raises(DomainError, match="needs its rle"):
        M.rle_to_mask("not a list", 10, 10)


def test_truncated_code_is_a_clear_error():
    rle = M.mask_to_rle(_blob())
    with pytest.raises(DomainError, match="damaged"):
        M.rle_to_mask(rle[: len(rle) // 2], 160, 120)


def test_polygon_fills_its_outline_within_a_pixel():
    # a 40 x 30 px rectangle at (20, 30) on a 100 x 80 image, in percent
    pts = [[20, 37.5], [60, 37.5], [60, 75], [20, 75]]
    m = M.polygon_to_mask(pts, 100, 80)
    want = np.zeros((80, 100), bool)
    want[30:60, 20:60] = True
    assert abs(int(m.sum()) - int(want.sum())) <= 2 * (40 + 30)  # one pixel at the boundary
    assert (m ^ want).sum() <= 2 * (40 + 30) and m[45, 40]


def test_bad_polygons_and_labels_are_refused():
    with pytest.raises(DomainError, match="3.."):
        M.polygon_to_mask([[1, 1], [2, 2]], 10, 10)
    with pytest.raises(DomainError, match="outside"):
        M.polygon_to_mask([[1, 1], [200, 2], [3, 4]], 10, 10)
    item = M.brush_region(_blob(), "Spleen")
    with pytest.raises(DomainError, match="unknown mask label"):
        M.region_mask(item, {"Heart"})
    item = M.brush_region(_blob(), "Heart")
    with pytest.raises(DomainError, match="expected"):
        M.region_mask(item, None, size=(100, 100))
    item["image_rotation"] = 90
    with pytest.raises(DomainError, match="rotated"):
        M.region_mask(item, None)


def test_config_offers_brush_and_polygon_for_the_mask_classes():
    tax = preset("vindr_cxr")
    masks = mask_preset("anatomy")
    xml = label_config(tax, masks)
    found = validate_label_config(xml, tax, masks)
    assert found.mask_classes == ("Right lung", "Left lung", "Heart")
    assert "<BrushLabels" in xml and "<PolygonLabels" in xml
    # a config whose polygon tool offers other classes than the brush is not ours
    bad = xml.replace('<PolygonLabels name="outline" toName="image"><Label value="Right lung"',
                      '<PolygonLabels name="outline" toName="image"><Label value="Spleen"')
    with pytest.raises(DomainError, match="PolygonLabels"):
        parse_label_config(bad)
    with pytest.raises(DomainError, match="mask classes missing"):
        validate_label_config(label_config(tax), tax, masks)


def test_mask_class_names_are_checked():
    with pytest.raises(DomainError, match="unique"):
        build_mask_classes(["Heart", "Heart"])
    with pytest.raises(DomainError, match="cannot be a mask"):
        build_mask_classes(["No finding"])
    with pytest.raises(DomainError, match="differ in their letters"):
        build_mask_classes(["a b", "a_b"])
