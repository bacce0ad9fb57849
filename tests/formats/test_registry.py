import numpy as np
import pytest

from annotations.errors import DomainError
from annotations.formats import registry
from annotations.formats.vinbigdata import write_consensus_csv, write_csv
from annotations.taxonomy import VINDR_CXR_CLASSES, preset

from .helpers import RECORDS, TAXONOMY, as_table, assert_same_boxes, consensus, reads


def test_names():
    assert set(registry.EXPORTERS) == {"coco", "yolo", "voc", "vinbigdata"}
    assert set(registry.IMPORTERS) == {"coco", "yolo", "voc", "vinbigdata", "nih"}


def test_unknown_format():
    with pytest.raises(DomainError) as err:
        registry.get_exporter("csv2")
    assert err.value.code == "unknown_format" and "coco" in err.value.detail
    with pytest.raises(DomainError):
        registry.get_importer("csv2")


def test_duplicate_registration_refused():
    with pytest.raises(ValueError):
        registry.register_exporter("coco")(lambda *a, **k: {})


@pytest.mark.parametrize("name", ["coco", "yolo", "voc", "vinbigdata"])
def test_round_trip_by_name(name):
    files = registry.get_exporter(name)(RECORDS, reads(), TAXONOMY, reader="R2")
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in files.items())
    got = registry.get_importer(name)(files, TAXONOMY, reader="R2", records=RECORDS)
    table = as_table(got)
    np.testing.assert_allclose(table[("img_a", "R2")][0], [[11.0, 21.0, 299.0, 401.0]], atol=1e-3)


def test_vinbigdata_wrapper_writes_what_the_module_writes():
    files = registry.get_exporter("vinbigdata")(RECORDS, reads(), TAXONOMY)
    assert files == {"annotations.csv": write_csv(reads(), VINDR_CXR_CLASSES)}
    files = registry.get_exporter("vinbigdata")(RECORDS, consensus(), TAXONOMY)
    assert files == {"annotations.csv": write_consensus_csv(consensus(), VINDR_CXR_CLASSES)}
    back = registry.get_importer("vinbigdata")(
        registry.get_exporter("vinbigdata")(RECORDS, reads(), TAXONOMY), TAXONOMY
    )
    assert_same_boxes(back, reads(), atol=0)


def test_single_file_formats_take_one_file():
    with pytest.raises(DomainError) as err:
        registry.get_importer("coco")({"a.json": "{}", "b.json": "{}"}, TAXONOMY)
    assert err.value.code == "invalid_coco"
    with pytest.raises(DomainError):
        registry.get_importer("yolo")({}, TAXONOMY)  # needs records


def test_nih_by_name():
    text = "Image Index,Finding Label,Bbox [x,y,w,h],,,\na.png,Mass,1,2,3,4\n"
    (im,) = registry.get_importer("nih")({"BBox_List_2017.csv": text}, preset("nih"))
    assert im.reads[0].reader == "NIH" and im.reads[0].classes.tolist() == [4]


def test_image_record_validation():
    from annotations.formats.records import ImageRecord

    with pytest.raises(DomainError):
        ImageRecord("a", "a.png", 0, 10)
    with pytest.raises(DomainError):
        ImageRecord("", "a.png", 10, 10)


def test_format_follows_from_the_file():
    from annotations.formats.registry import format_guess

    assert format_guess("a.json", '{"images": [], "annotations": [], "categories": []}') == "coco"
    assert format_guess("x.csv", "image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max\n"
                        ) == "vinbigdata"
    assert format_guess("BBox_List_2017.csv", "Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
                        ) == "nih"
    assert format_guess("000001.xml", "<annotation><filename>a</filename></annotation>") == "voc"


def test_unknown_file_asks_for_a_format_in_a_short_message():
    from annotations.formats.registry import format_guess

    huge = '{"not": "coco", "data": "' + "x" * 100_000 + '"}'
    with pytest.raises(DomainError) as err:
        format_guess("file.json", huge)
    assert err.value.code == "unknown_format" and "--format" in err.value.message
    assert len(err.value.message) < 200 and "xxxx" not in repr(err.value.detail)


def test_vinbigdata_header_error_does_not_echo_the_whole_file():
    from annotations.formats import vinbigdata

    with pytest.raises(DomainError) as err:
        vinbigdata.parse_csv('{"images": [' + '{"id": 1}, ' * 5000 + "]}")
    assert len(repr(err.value.detail)) < 500
