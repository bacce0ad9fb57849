import csv
import io

import numpy as np
import pytest

from annotations.errors import DomainError
from annotations.formats.nih import parse_nih_csv
from annotations.taxonomy import NIH_CLASSES

HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,\n"


@pytest.fixture(scope="module")
def nih_text():
    from annotations.public_data import NIH_BBOX_CSV, read_text

    try:
        return read_text(NIH_BBOX_CSV)
    except DomainError as exc:  # offline machine
        pytest.skip(f"NIH box list unavailable: {exc.message}")


def test_real_file(nih_text):
    images = parse_nih_csv(nih_text)
    assert len(images) == 880
    assert sum(len(im.reads[0].boxes) for im in images) == 984
    assert all([r.reader for r in im.reads] == ["NIH"] for im in images)
    assert all((im.width, im.height) == (1024, 1024) for im in images)
    labels = {row[1] for row in list(csv.reader(io.StringIO(nih_text)))[1:]}
    assert labels <= set(NIH_CLASSES)
    used = {int(c) for im in images for c in im.reads[0].classes}
    assert used == set(range(len(NIH_CLASSES)))
    first = next(im for im in images if im.image_id == "00013118_008.png")
    np.testing.assert_allclose(
        first.reads[0].boxes[0],
        [225.084745762712, 547.019216763771, 225.084745762712 + 86.7796610169491,
         547.019216763771 + 79.1864406779661],
    )


def test_groups_boxes_and_accepts_alias():
    text = HEADER + (
        "b.png,Mass,1,2,3,4\n"
        "a.png,Infiltration,10,10,5,5,,,\n"
        "b.png,Nodule,5,5,1,1\n"
    )
    a, b = parse_nih_csv(text, reader="X", image_size=None)
    assert (a.image_id, a.width) == ("a.png", None)
    assert a.reads[0].classes.tolist() == [NIH_CLASSES.index("Infiltrate")]
    assert b.reads[0].reader == "X" and b.reads[0].classes.tolist() == [4, 5]
    np.testing.assert_array_equal(b.reads[0].boxes, [[1, 2, 4, 6], [5, 5, 6, 6]])


def test_malformed_rows_reported_with_line_numbers():
    text = HEADER + (
        "a.png,Mass,1,2,3,4\n"  # 2 ok
        "a.png,Hernia,1,2,3,4\n"  # 3 unknown label
        "a.png,Mass,1,2,3\n"  # 4 field count
        "a.png,Mass,1,2,x,4\n"  # 5 not a number
        "a.png,Mass,1,2,0,4\n"  # 6 zero width
        "a.png,Mass,1000,2,100,4\n"  # 7 outside 1024
        ",Mass,1,2,3,4\n"  # 8 no image
    )
    with pytest.raises(DomainError) as err:
        parse_nih_csv(text)
    assert err.value.code == "invalid_csv"
    assert [d["line"] for d in err.value.detail] == [3, 4, 5, 6, 7, 8]
    assert "Hernia" in err.value.detail[0]["error"]


def test_bad_header():
    with pytest.raises(DomainError) as err:
        parse_nih_csv("image_id,label\n")
    assert err.value.detail[0]["line"] == 1
    with pytest.raises(DomainError):
        parse_nih_csv("")
