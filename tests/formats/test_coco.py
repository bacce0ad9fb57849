import json

import numpy as np
import pytest

from annotations.consensus.types import ImageReads, ReaderRead
from annotations.errors import DomainError
from annotations.formats.coco import build_coco, parse_coco, write_coco
from annotations.taxonomy import NO_FINDING

from .helpers import RECORDS, TAXONOMY, assert_same_boxes, consensus, reads


def test_round_trip_all_readers():
    text = write_coco(RECORDS, reads(), TAXONOMY)
    got = parse_coco(text, TAXONOMY)
    assert_same_boxes(got, reads())
    assert got[2].reads == []  # img_c: nobody read it, and the "reads" extension says so
    assert [(im.image_id, im.width, im.height) for im in got] == [
        ("img_a", 1000, 800), ("img_b", 640, 480), ("img_c", 512, 512)
    ]


def test_round_trip_one_reader():
    doc = build_coco(RECORDS, reads(), TAXONOMY, reader="R2")
    assert {a["reader"] for a in doc["annotations"]} == {"R2"}
    got = parse_coco(doc, TAXONOMY)
    a = [im for im in got if im.image_id == "img_a"][0]
    assert [r.reader for r in a.reads] == ["R2"]
    np.testing.assert_allclose(a.reads[0].boxes, [[11.0, 21.0, 299.0, 401.0]], atol=1e-9)


def test_layout_categories_scores_and_no_finding_images_kept():
    doc = build_coco(RECORDS, consensus(), TAXONOMY, info={"year": 2024})
    assert doc["info"]["year"] == 2024 and "description" in doc["info"]
    assert [c["id"] for c in doc["categories"]] == list(range(1, 15))
    assert doc["categories"][3]["name"] == "Cardiomegaly"
    assert len(doc["images"]) == 3  # img_b (No finding) and img_c (no result) kept
    assert doc["images"][1]["image_labels"] == [NO_FINDING]
    assert doc["images"][2]["image_labels"] == []  # no result: undetermined
    (ann,) = doc["annotations"]
    assert ann["category_id"] == 4 and ann["iscrowd"] == 0 and ann["score"] == 0.66
    assert ann["bbox"] == [10.5, 20.75, 289.0, 380.125]
    assert ann["area"] == pytest.approx(289.0 * 380.125)
    assert "reader" not in ann
    got = parse_coco(json.dumps(doc), TAXONOMY, reader="consensus")
    assert got[0].reads[0].reader == "consensus"
    np.testing.assert_allclose(got[0].reads[0].boxes, consensus()["img_a"].boxes, atol=1e-9)
    assert got[1].reads[0].image_labels == frozenset({NO_FINDING})


def _foreign():
    return {
        "images": [
            {"id": 7, "file_name": "train/x1.png", "width": 100, "height": 50},
            {"id": 8, "file_name": "train/x2.png", "width": 100, "height": 50},
        ],
        "categories": [{"id": 3, "name": "Nodule/Mass"}, {"id": 9, "name": "Unused thing"}],
        "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [1, 2, 10, 20]}],
    }


def test_foreign_file_maps_categories_by_name_and_ids_by_stem():
    got = parse_coco(_foreign(), TAXONOMY, reader="ext")
    assert [im.image_id for im in got] == ["x1", "x2"]
    assert got[0].reads[0].classes.tolist() == [8]
    np.testing.assert_array_equal(got[0].reads[0].boxes, [[1, 2, 11, 22]])
    assert got[1].reads[0].image_labels == frozenset({NO_FINDING})


def test_small_overhang_is_clipped():
    doc = _foreign()
    doc["annotations"][0]["bbox"] = [-0.5, 0, 100.8, 50.5]
    (box,) = parse_coco(doc, TAXONOMY)[0].reads[0].boxes
    assert box.tolist() == [0, 0, 100, 50]


def test_malformed_annotations_are_listed_by_index():
    doc = _foreign()
    doc["annotations"] = [
        {"image_id": 7, "category_id": 3, "bbox": [1, 2, 10, 20]},  # 0 ok
        {"image_id": 7, "category_id": 3},  # 1 missing bbox
        {"image_id": 99, "category_id": 3, "bbox": [1, 2, 10, 20]},  # 2 unknown image
        {"image_id": 7, "category_id": 42, "bbox": [1, 2, 10, 20]},  # 3 unknown category
        {"image_id": 7, "category_id": 3, "bbox": [1, 2, -10, 20]},  # 4 negative size
        {"image_id": 7, "category_id": 3, "bbox": [1, 2, 0, 20]},  # 5 zero size
        {"image_id": 7, "category_id": 3, "bbox": [90, 2, 20, 20]},  # 6 outside (> 1 px)
        {"image_id": 7, "category_id": 9, "bbox": [1, 2, 10, 20]},  # 7 not in taxonomy
        {"image_id": 7, "category_id": 3, "bbox": [1, 2, "10", 20]},  # 8 not numbers
        {"image_id": 7, "category_id": 3, "bbox": [1, 2, 10, 20], "iscrowd": 1},  # 9 crowd
    ]
    with pytest.raises(DomainError) as err:
        parse_coco(doc, TAXONOMY)
    assert err.value.code == "invalid_coco"
    assert [d["index"] for d in err.value.detail] == list(range(1, 10))
    assert {d["section"] for d in err.value.detail} == {"annotations"}
    assert "missing keys" in err.value.detail[0]["error"]


def test_malformed_images_and_root():
    with pytest.raises(DomainError) as err:
        parse_coco("{not json", TAXONOMY)
    assert err.value.code == "invalid_coco"
    with pytest.raises(DomainError) as err:
        parse_coco({"images": []}, TAXONOMY)
    assert len(err.value.detail) == 2
    doc = _foreign()
    doc["images"].append({"id": 7, "file_name": "y.png", "width": 1, "height": 1})
    doc["images"].append({"id": 10, "file_name": "z.png", "width": 0, "height": 1})
    doc["images"].append({"id": 11, "width": 3, "height": 1})
    with pytest.raises(DomainError) as err:
        parse_coco(doc, TAXONOMY)
    assert [(d["section"], d["index"]) for d in err.value.detail] == [
        ("images", 2), ("images", 3), ("images", 4)
    ]


def test_export_rejects_unknown_images_and_classes():
    bad = reads() + [ImageReads("img_z", None, None, [ReaderRead("R1", [[1, 1, 2, 2]], [0])])]
    with pytest.raises(DomainError) as err:
        build_coco(RECORDS, bad, TAXONOMY)
    assert err.value.code == "invalid_export"
    bad = [ImageReads("img_a", None, None, [ReaderRead("R1", [[1, 1, 2, 2]], [14])])]
    with pytest.raises(DomainError):
        build_coco(RECORDS, bad, TAXONOMY)  # 14 is "No finding": not a box class
    bad = [ImageReads("img_a", 999, 800, [])]
    with pytest.raises(DomainError):
        build_coco(RECORDS, bad, TAXONOMY)  # size disagrees with the record
