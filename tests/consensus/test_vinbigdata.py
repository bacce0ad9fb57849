import numpy as np
import pytest

from annotations.consensus import build
from annotations.errors import DomainError
from annotations.formats.vinbigdata import parse_csv, write_consensus_csv, write_csv

HEADER = "image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max\n"


def test_parse_groups_by_image_then_reader():
    text = HEADER + (
        "img2,No finding,14,R3,,,,\n"
        "img1,Cardiomegaly,3,R10,691.0,1375.0,1653.0,1831.0\n"
        "img1,Aortic enlargement,0,R9,1264.0,743.0,1611.0,1019.0\n"
        "img1,Aortic enlargement,0,R10,1260.5,740.0,1600.0,1010.0\n"
    )
    images = parse_csv(text)
    assert [im.image_id for im in images] == ["img1", "img2"]
    r10, r9 = images[0].reads
    assert (r10.reader, r9.reader) == ("R10", "R9")
    assert r10.classes.tolist() == [3, 0]
    np.testing.assert_array_equal(r10.boxes[1], [1260.5, 740.0, 1600.0, 1010.0])
    assert images[1].reads[0].image_labels == frozenset({"No finding"})


def test_malformed_rows_reported_with_line_numbers():
    text = HEADER + (
        "img1,Cardiomegaly,3,R1,1,1,5,5\n"  # line 2 ok
        "img1,Cardiomegaly,x,R1,1,1,5,5\n"  # 3 bad id
        "img1,Nodule/Mass,3,R1,1,1,5,5\n"  # 4 name/id mismatch
        "img2,No finding,14,R1,1,,,\n"  # 5 coords on No finding
        "img3,Cardiomegaly,3,R1,1,1,5\n"  # 6 field count
        "img3,Cardiomegaly,3,R1,5,1,1,5\n"  # 7 inverted
        "img3,Cardiomegaly,3,R2,a,1,5,5\n"  # 8 not a number
        "img1,No finding,14,R1,,,,\n"  # 9 contradicts line 2
    )
    with pytest.raises(DomainError) as err:
        parse_csv(text)
    assert err.value.code == "invalid_csv"
    assert [d["line"] for d in err.value.detail] == [3, 4, 5, 6, 7, 8, 9]


def test_bad_header():
    with pytest.raises(DomainError) as err:
        parse_csv("a,b\n1,2\n")
    assert err.value.detail[0]["line"] == 1


def test_round_trip(vinbigdata_images):
    images = vinbigdata_images[:500]
    text = write_csv(images)
    again = parse_csv(text)
    assert write_csv(again) == text
    for a, b in zip(images, again, strict=True):
        assert a.image_id == b.image_id
        for ra, rb in zip(a.reads, b.reads, strict=True):
            assert ra.reader == rb.reader and ra.image_labels == rb.image_labels
            np.testing.assert_array_equal(ra.boxes, rb.boxes)
            np.testing.assert_array_equal(ra.classes, rb.classes)


def test_consensus_csv(vinbigdata_images):
    images = vinbigdata_images[:300]
    results = build("majority").run(images)
    back = {im.image_id: im.reads for im in parse_csv(write_consensus_csv(results))}
    for image_id, res in results.items():
        (r,) = back[image_id]
        assert r.reader == "consensus" and r.image_labels == res.image_labels
        np.testing.assert_array_equal(r.boxes, res.boxes)
