import numpy as np
import pytest

from annotations.consensus.types import ImageReads, ReaderRead
from annotations.errors import DomainError
from annotations.formats.records import ImageRecord
from annotations.formats.voc import from_voc_box, parse_voc, to_voc_box, write_voc
from annotations.taxonomy import NO_FINDING

from .helpers import TAXONOMY, assert_same_boxes

RECS = [ImageRecord("a", "a.dcm", 100, 80), ImageRecord("b", "b.dcm", 50, 50)]


def _reads(boxes):
    return [
        ImageReads("a", 100, 80, [ReaderRead("VOC", boxes, [3] * len(boxes))]),
        ImageReads("b", 50, 50, [ReaderRead("VOC", [], [], {NO_FINDING})]),
    ]


def test_integer_boxes_round_trip_exactly():
    want = _reads([[0, 0, 100, 80], [10, 20, 30, 40]])
    files = write_voc(RECS, want, TAXONOMY)
    assert set(files) == {"Annotations/a.xml", "Annotations/b.xml"}
    assert_same_boxes(parse_voc(files, TAXONOMY), want, atol=0)
    xml = files["Annotations/a.xml"]
    assert "<xmin>1</xmin>" in xml and "<xmax>100</xmax>" in xml  # full-width box
    assert "<depth>1</depth>" in xml and "<difficult>0</difficult>" in xml
    assert "<name>Cardiomegaly</name>" in xml and "<filename>a.dcm</filename>" in xml


def test_non_integer_boxes_round_to_nearest_edge():
    files = write_voc(RECS, _reads([[10.4, 20.5, 30.49, 39.6]]), TAXONOMY)
    got = parse_voc(files, TAXONOMY)
    np.testing.assert_array_equal(got[0].reads[0].boxes, [[10, 21, 30, 40]])
    assert_same_boxes(got, _reads([[10.4, 20.5, 30.49, 39.6]]), atol=0.5)


def test_convention_helpers():
    assert to_voc_box([0, 0, 1, 1], 10, 10) == (1, 1, 1, 1)  # one pixel
    assert to_voc_box([5.2, 5.2, 5.4, 5.4], 10, 10) == (6, 6, 6, 6)  # widened to one pixel
    assert to_voc_box([9.8, 0, 10, 10], 10, 10) == (10, 1, 10, 10)  # xmin capped
    assert from_voc_box(1, 1, 1, 1) == [0, 0, 1, 1]


def test_records_map_filenames_to_ids():
    files = write_voc([ImageRecord("uuid-1", "scan.png", 10, 10)],
                      [ImageReads("uuid-1", 10, 10, [ReaderRead("R", [[1, 1, 5, 5]], [0])])],
                      TAXONOMY)
    assert parse_voc(files, TAXONOMY)[0].image_id == "scan"
    recs = [ImageRecord("uuid-1", "scan.png", 10, 10)]
    (im,) = parse_voc(files, TAXONOMY, records=recs, reader="R")
    assert im.image_id == "uuid-1" and im.reads[0].reader == "R"
    with pytest.raises(DomainError):  # size mismatch with the record
        parse_voc(files, TAXONOMY, records=[ImageRecord("uuid-1", "scan.png", 11, 10)])


def _obj(name, xmin, ymin, xmax, ymax):
    return (f"<object><name>{name}</name><bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
            f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>")


def _doc(*objs, size="<size><width>100</width><height>80</height></size>"):
    return f"<annotation><filename>a.png</filename>{size}{''.join(objs)}</annotation>"


def test_malformed_files_reported_and_nothing_returned():
    files = {
        "ok.xml": _doc(_obj("Cardiomegaly", 1, 1, 10, 10)),
        "x/a.xml": _doc(
            _obj("Cardiomegaly", 1, 1, 10, 10),  # 0 ok
            _obj("Heart", 1, 1, 10, 10),  # 1 unknown class
            _obj("Cardiomegaly", 10, 1, 5, 10),  # 2 inverted
            _obj("Cardiomegaly", 1, 1, 110, 10),  # 3 outside
            _obj("Cardiomegaly", 1, 1, "ten", 10),  # 4 not a number
        ),
        "nosize.xml": _doc(size=""),
        "broken.xml": "<annotation><filename>",
        "other.xml": "<foo/>",
        "readme.txt": "ignored",
    }
    with pytest.raises(DomainError) as err:
        parse_voc(files, TAXONOMY)
    assert err.value.code == "invalid_voc"
    where = [(d["file"], d.get("object")) for d in err.value.detail]
    assert where == [
        ("broken.xml", None), ("nosize.xml", None), ("other.xml", None),
        ("x/a.xml", 1), ("x/a.xml", 2), ("x/a.xml", 3), ("x/a.xml", 4),
    ]


def test_entity_expansion_is_refused():
    bomb = ('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xxxxxxxx">]>'
            "<annotation><filename>&x;</filename></annotation>")
    with pytest.raises(DomainError) as err:
        parse_voc({"a.xml": bomb}, TAXONOMY)
    assert err.value.code == "invalid_voc"


def test_duplicate_image_is_an_error():
    files = {"one.xml": _doc(), "two.xml": _doc()}
    with pytest.raises(DomainError):
        parse_voc(files, TAXONOMY)
