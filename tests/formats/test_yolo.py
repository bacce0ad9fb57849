import numpy as np
import pytest

from annotations.consensus.types import ImageReads, ReaderRead
from annotations.errors import DomainError
from annotations.formats.records import ImageRecord
from annotations.formats.yolo import parse_yolo, write_yolo
from annotations.taxonomy import NO_FINDING

from .helpers import RECORDS, TAXONOMY, as_table, assert_same_boxes, consensus, reads


def _pooled(images, reader="YOLO"):
    """What YOLO keeps of reads: all boxes pooled under one reader, empty = No finding."""
    out = []
    for rec in RECORDS:
        im = [i for i in images if i.image_id == rec.image_id]
        rs = im[0].reads if im else []
        boxes = np.concatenate([r.boxes for r in rs]) if rs else np.zeros((0, 4))
        classes = np.concatenate([r.classes for r in rs]) if rs else []
        labels = frozenset() if len(boxes) else frozenset({NO_FINDING})
        out.append(ImageReads(rec.image_id, rec.width, rec.height,
                              [ReaderRead(reader, boxes, classes, labels)]))
    return out


def test_round_trip_exact_with_more_decimals():
    files = write_yolo(RECORDS, reads(), TAXONOMY, decimals=12)
    assert_same_boxes(parse_yolo(files, RECORDS, TAXONOMY), _pooled(reads()))


def test_round_trip_default_decimals_within_quantisation():
    files = write_yolo(RECORDS, reads(), TAXONOMY)
    # 6 decimals of a normalised value: at most 0.5e-6 * size per coordinate, x2 for edges.
    assert_same_boxes(parse_yolo(files, RECORDS, TAXONOMY), _pooled(reads()), atol=1e-6 * 1000)


def test_layout():
    files = write_yolo(RECORDS, consensus(), TAXONOMY)
    assert set(files) == {
        "labels/img_a.txt", "labels/img_b.txt", "labels/img_c.txt", "classes.txt", "data.yaml"
    }
    assert files["labels/img_b.txt"] == "" and files["labels/img_c.txt"] == ""
    (line,) = files["labels/img_a.txt"].splitlines()
    fields = line.split()
    assert fields[0] == "3" and all(len(f.split(".")[1]) == 6 for f in fields[1:])
    assert float(fields[1]) == pytest.approx((10.5 + 299.5) / 2 / 1000, abs=1e-6)
    assert files["classes.txt"].splitlines()[8] == "Nodule/Mass"
    assert files["data.yaml"].startswith("nc: 14\nnames:\n  0: \"Aortic enlargement\"\n")


def test_classes_file_maps_by_name():
    recs = [ImageRecord("a", "a.png", 100, 100)]
    files = {"labels/a.txt": "1 0.5 0.5 0.2 0.2\n", "classes.txt": "Atelectasis\nCardiomegaly\n"}
    (im,) = parse_yolo(files, recs, TAXONOMY, reader="me")
    assert im.reads[0].reader == "me" and im.reads[0].classes.tolist() == [3]
    np.testing.assert_allclose(im.reads[0].boxes, [[40, 40, 60, 60]])


def test_malformed_lines_reported_and_nothing_returned():
    recs = [ImageRecord("a", "a.png", 100, 100)]
    files = {
        "labels/a.txt": (
            "0 0.5 0.5 0.2 0.2\n"  # 1 ok
            "0 0.5 0.5 0.2\n"  # 2 field count
            "x 0.5 0.5 0.2 0.2\n"  # 3 class not int
            "99 0.5 0.5 0.2 0.2\n"  # 4 class out of range
            "0 0.5 0.5 -0.2 0.2\n"  # 5 negative size
            "0 0.95 0.5 0.2 0.2\n"  # 6 beyond the right edge by 5 px
            "0 a 0.5 0.2 0.2\n"  # 7 not a number
        ),
        "labels/zzz.txt": "",  # no record
    }
    with pytest.raises(DomainError) as err:
        parse_yolo(files, recs, TAXONOMY)
    assert err.value.code == "invalid_yolo"
    assert [(d["file"], d.get("line")) for d in err.value.detail] == [
        *(("labels/a.txt", n) for n in range(2, 8)), ("labels/zzz.txt", None)
    ]


def test_export_stem_clash():
    recs = [ImageRecord("a", "x/a.png", 10, 10), ImageRecord("b", "y/a.png", 10, 10)]
    with pytest.raises(DomainError) as err:
        write_yolo(recs, [], TAXONOMY)
    assert err.value.code == "invalid_export"


def test_pooled_readers_keep_every_box():
    files = write_yolo(RECORDS, reads(), TAXONOMY, reader="R1")
    got = as_table(parse_yolo(files, RECORDS, TAXONOMY))
    assert len(got[("img_a", "YOLO")][0]) == 2
