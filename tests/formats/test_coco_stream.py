"""The streamed COCO writer: chunk after chunk, the same document as the whole one."""

import json

import pytest

from annotations.errors import DomainError
from annotations.formats.coco import build_coco, parse_coco, stream_coco
from annotations.formats.records import ImageRecord

from .helpers import RECORDS, TAXONOMY, assert_same_boxes, consensus, reads


def _chunked_reads():
    """RECORDS split 1 + 0 + 2, each chunk with only its own images' reads."""
    by_id = {r.image_id: r for r in reads()}
    for records in (RECORDS[:1], [], RECORDS[1:]):
        yield records, [by_id[r.image_id] for r in records if r.image_id in by_id]


@pytest.mark.parametrize("spool_bytes", [1, 1 << 20], ids=["spilled-to-disk", "in-memory"])
def test_chunks_of_reads_make_the_document_of_the_whole(spool_bytes):
    text = "".join(stream_coco(_chunked_reads(), TAXONOMY, spool_bytes=spool_bytes))
    assert json.loads(text) == build_coco(RECORDS, reads(), TAXONOMY)
    assert_same_boxes(parse_coco(text, TAXONOMY), reads())


def test_ids_run_on_across_chunks_of_a_consensus():
    whole = consensus()
    chunks = [([r], {r.image_id: whole[r.image_id]} if r.image_id in whole else {})
              for r in RECORDS]
    doc = json.loads("".join(stream_coco(chunks, TAXONOMY, info={"year": 2026})))
    assert doc == build_coco(RECORDS, whole, TAXONOMY, info={"year": 2026})
    assert [i["id"] for i in doc["images"]] == [1, 2, 3]
    assert [a["id"] for a in doc["annotations"]] == list(range(1, len(doc["annotations"]) + 1))


def test_one_reader_and_no_chunks_at_all():
    one = "".join(stream_coco(_chunked_reads(), TAXONOMY, reader="R2"))
    assert json.loads(one) == build_coco(RECORDS, reads(), TAXONOMY, reader="R2")
    empty = json.loads("".join(stream_coco([], TAXONOMY)))
    assert empty["images"] == [] and empty["annotations"] == [] and empty["categories"]


def test_a_chunk_whose_reads_do_not_fit_its_images_fails_before_its_images_are_written():
    bad = [ImageRecord("img_a", "img_a.png", 10, 10)]  # reads say 1000 x 800
    writer = stream_coco([(bad, reads()[:1])], TAXONOMY)
    assert next(writer).startswith("{")  # the head costs nothing to write
    with pytest.raises(DomainError) as err:
        next(writer)
    assert err.value.code == "invalid_export"
