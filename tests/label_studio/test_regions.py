"""Percent <-> pixel mapping: exact round trips, strict parsing, recorded payloads."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from annotations.errors import DomainError
from annotations.label_studio import regions
from annotations.label_studio.config import split_taxonomy
from annotations.taxonomy import preset

SAMPLES = Path(__file__).resolve().parent / "samples"  # recorded from Label Studio 1.23.2
_CLASSES = split_taxonomy(preset("vindr_cxr"))
BOX, IMAGE_LEVEL = _CLASSES.box_classes, _CLASSES.image_classes


def _sample(name: str):
    return json.loads((SAMPLES / name).read_text())


def test_round_trip_is_exact_for_random_boxes():
    rng = np.random.default_rng(7)
    for width, height in [(256, 256), (3072, 2540), (1001, 997), (2, 3)]:
        corners = rng.uniform(0, 1, size=(200, 2, 2)) * [width, height]
        boxes = np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)
        labels = [BOX[i % len(BOX)] for i in range(len(boxes))]
        result = regions.build_result(boxes, labels, original_width=width,
                                      original_height=height)
        parsed = regions.parse_result(result, box_classes=BOX, original_width=width,
                                      original_height=height)
        np.testing.assert_allclose(parsed.boxes, boxes, rtol=0, atol=1e-9)
        assert parsed.boxes.dtype == np.float64 and parsed.labels == labels


def test_percent_values_follow_label_studio_convention():
    item = regions.box_region([100, 50, 400, 250], "Nodule/Mass", original_width=1000,
                              original_height=500, score=0.9, region_id="r1")
    assert item == {
        "id": "r1", "from_name": "label", "to_name": "image", "type": "rectanglelabels",
        "original_width": 1000, "original_height": 500, "image_rotation": 0,
        "value": {"x": 10.0, "y": 10.0, "width": 30.0, "height": 40.0, "rotation": 0,
                  "rectanglelabels": ["Nodule/Mass"]},
        "score": 0.9,
    }
    np.testing.assert_array_equal(regions.percent_to_box(item["value"], 1000, 500),
                                  [100, 50, 400, 250])


def test_build_result_with_scores_and_image_labels_and_fresh_ids():
    result = regions.build_result([[1, 2, 3, 4], [5, 6, 7, 8]], ["ILD", "ILD"],
                                  original_width=10, original_height=10, scores=[0.1, 0.2],
                                  image_labels=["No finding"])
    assert [r["type"] for r in result] == ["rectanglelabels", "rectanglelabels", "choices"]
    assert result[2]["from_name"] == "image_labels"
    assert len({r["id"] for r in result}) == 3
    parsed = regions.parse_result(result, box_classes=BOX, image_classes=IMAGE_LEVEL)
    np.testing.assert_allclose(parsed.scores, [0.1, 0.2])
    assert parsed.image_labels == {"No finding"}
    with pytest.raises(DomainError):
        regions.build_result([[1, 2, 3, 4]], ["ILD", "ILD"], original_width=10,
                             original_height=10)


def test_empty_result_parses_to_empty_arrays():
    parsed = regions.parse_result([])
    assert parsed.boxes.shape == (0, 4) and parsed.labels == [] and parsed.image_labels == set()


def test_export_snapshot_sample():
    tasks = _sample("export_snapshot_full.json")
    first = tasks[0]["annotations"][0]["result"]
    parsed = regions.parse_result(first, box_classes=BOX, image_classes=IMAGE_LEVEL)
    np.testing.assert_allclose(parsed.boxes, [[24 * 2.56, 32 * 2.56, 39 * 2.56, 47 * 2.56]],
                               atol=1e-9)
    assert parsed.labels == ["Nodule/Mass"] and parsed.region_ids == ["r1a"]
    assert (parsed.original_width, parsed.original_height) == (256, 256)
    assert math.isnan(parsed.scores[0])
    second = regions.parse_result(tasks[0]["annotations"][1]["result"], box_classes=BOX,
                                  image_classes=IMAGE_LEVEL)
    # a recorded probe config named its choices control "global": choices are read by type
    assert second.labels == ["Nodule/Mass"] and second.image_labels == {"No finding"}
    prediction = regions.parse_result(tasks[0]["predictions"][0]["result"], box_classes=BOX)
    np.testing.assert_allclose(prediction.boxes[0], [59.904, 79.872, 99.84, 119.808], atol=1e-9)


@pytest.mark.parametrize("name", ["webhook_payload.json", "webhook_payload_updated.json"])
def test_webhook_samples(name):
    annotation = _sample(name)["body"]["annotation"]
    parsed = regions.parse_result(annotation["result"], box_classes=BOX,
                                  image_classes=IMAGE_LEVEL)
    if name == "webhook_payload.json":  # no "id" and no image_rotation in webhook regions
        np.testing.assert_allclose(parsed.boxes, [[128, 76.8, 153.6, 102.4]], atol=1e-9)
        assert parsed.labels == ["Cardiomegaly"] and parsed.region_ids == [None]
    else:
        assert parsed.boxes.shape == (0, 4) and parsed.image_labels == {"No finding"}


def test_ml_predict_sample_tasks_parse():
    for name in ("ml_predict.json", "ml_predict_interactive.json"):
        for task in _sample(name)["body"]["tasks"]:
            for item in task["annotations"] + task["predictions"]:
                regions.parse_result(item["result"], box_classes=BOX, image_classes=IMAGE_LEVEL)


def _region(**value):
    item = regions.box_region([10, 10, 20, 20], "ILD", original_width=100,
                              original_height=100)
    item["value"].update(value)
    return item


def test_unknown_labels_are_refused():
    with pytest.raises(DomainError, match="unknown box label") as err:
        regions.parse_result([_region(rectanglelabels=["Tumour"])], box_classes=BOX)
    assert err.value.code == "invalid_region"
    with pytest.raises(DomainError, match="unknown image-level"):
        regions.parse_result([regions.choices_region(["Normal"])], image_classes=IMAGE_LEVEL)
    with pytest.raises(DomainError, match="unknown box label"):  # image-level is not a box
        regions.parse_result([_region(rectanglelabels=["No finding"])], box_classes=BOX)
    with pytest.raises(DomainError, match="exactly one label"):
        regions.parse_result([_region(rectanglelabels=["ILD", "Atelectasis"])])


@pytest.mark.parametrize("field,angle", [("rotation", 15), ("rotation", -90),
                                         ("image_rotation", 90)])
def test_rotated_boxes_are_refused(field, angle):
    item = _region()
    if field == "rotation":
        item["value"]["rotation"] = angle
    else:
        item["image_rotation"] = angle
    with pytest.raises(DomainError, match="rotated"):
        regions.parse_result([item])


def test_full_turn_counts_as_upright():
    assert regions.parse_result([_region(rotation=360)]).boxes.shape == (1, 4)


def test_tiny_overshoot_is_clipped_and_large_is_refused():
    parsed = regions.parse_result([_region(x=-1e-7, y=60, width=100.000001, height=40.000005)])
    np.testing.assert_allclose(parsed.boxes, [[0, 60, 100, 100]], atol=1e-12)
    assert parsed.boxes.max() <= 100
    with pytest.raises(DomainError, match="outside the image"):
        regions.parse_result([_region(x=95, width=10)])


def test_bad_geometry_and_sizes_are_refused():
    with pytest.raises(DomainError, match="degenerate"):
        regions.parse_result([_region(width=0)])
    with pytest.raises(DomainError, match="measured on a"):
        regions.parse_result([_region()], original_width=200, original_height=100)
    no_size = _region()
    del no_size["original_width"], no_size["original_height"]
    with pytest.raises(DomainError, match="original_width"):
        regions.parse_result([no_size])
    assert regions.parse_result([no_size], original_width=100, original_height=100).labels
    with pytest.raises(DomainError, match="unsupported region type"):
        regions.parse_result([{"type": "polygonlabels", "value": {}}])
    with pytest.raises(DomainError, match="degenerate"):
        regions.box_to_percent([5, 5, 5, 9], 10, 10)
