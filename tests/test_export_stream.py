"""The streamed export: chunk by chunk, the same files as the whole export, from one
snapshot of the database, with bad arguments refused before the first byte."""

from __future__ import annotations

import json
import threading

import pytest
from django.db import connection
from rest_framework.test import APIClient

from annotations.models import AuditEvent, ConsensusBox, Image
from annotations.services import exports, readers
from annotations.services.annotating import BoxIn, reader_annotation_record
from annotations.services.consensus import consensus_run_create, consensus_run_execute
from annotations.services.exports import annotations_export, annotations_export_stream
from tests.conftest import ingest_paths, write_png


def _labelled(project, tmp_path) -> tuple[list[Image], list]:
    """Seven images: five read by three readers (boxes on four), two unread; consensus."""
    paths = [write_png(tmp_path / "in" / f"img{i}.png", seed=i) for i in range(7)]
    ingest_paths(project, paths)
    rs = [readers.reader_create(email=f"r{i}@example.org", code=f"R{i}") for i in (1, 2, 3)]
    images = list(Image.objects.order_by("pseudo_id"))
    for n, img in enumerate(images[:5]):
        for k, r in enumerate(rs):
            boxes = [] if n == 2 else [BoxIn("Cardiomegaly", 40 + k, 60, 160, 200),
                                       BoxIn("Nodule/Mass", 10, 10, 30 + n, 30)]
            reader_annotation_record(image=img, reader=r, boxes=boxes, trigger_consensus=False,
                                     image_labels=[] if boxes else ["No finding"])
    consensus_run_execute(run_id=consensus_run_create(project=project, strategy="majority",
                                                      enqueue=False).pk)
    return images, rs


def _streamed(project, **kw) -> dict:
    out = annotations_export_stream(project=project, fmt="coco", **kw)
    assert out.content_type == "application/json" and out.filename.endswith(".json")
    return json.loads(b"".join(out.chunks))


@pytest.mark.django_db
@pytest.mark.parametrize("chunk", [1, 3, 500])
@pytest.mark.parametrize("source,reader", [("final", None), ("consensus", None),
                                           ("readers", None), ("readers", "R2")])
def test_every_chunking_gives_the_whole_export(project, tmp_path, chunk, source, reader):
    _labelled(project, tmp_path)
    whole = json.loads(annotations_export(project=project, fmt="coco", source=source,
                                          reader=reader).content)
    assert whole["annotations"]  # not an empty comparison
    assert _streamed(project, source=source, reader=reader, chunk_images=chunk) == whole


@pytest.mark.django_db
def test_the_api_streams_and_refuses_bad_arguments_before_the_first_byte(
        project, tmp_path, admin_user):
    images, _ = _labelled(project, tmp_path)
    c = APIClient()
    c.force_authenticate(admin_user)
    resp = c.get("/api/projects/test/exports/coco/")
    assert resp.status_code == 200 and resp.streaming
    assert resp["Content-Disposition"] == 'attachment; filename="test-final-coco.json"'
    doc = json.loads(b"".join(resp.streaming_content))
    assert {i["image_key"] for i in doc["images"]} == {i.pseudo_id for i in images[:5]}
    for query, status, code in (("source=everything", 400, "invalid"),
                                ("source=consensus&run=999999", 404, "not_found")):
        bad = c.get(f"/api/projects/test/exports/coco/?{query}")
        assert bad.status_code == status and not bad.streaming
        assert bad.json()["error"]["code"] == code
    assert c.get("/api/projects/test/exports/parquet/").json()["error"]["code"] == \
        "unknown_format"
    # a format that is built whole still downloads, through the same call
    csv = c.get("/api/projects/test/exports/vinbigdata/")
    assert csv.status_code == 200 and b"image_id" in b"".join(csv.streaming_content)


@pytest.mark.django_db(transaction=True)
def test_a_consensus_run_finishing_mid_export_shows_in_no_chunk(project, tmp_path,
                                                                monkeypatch):
    images, rs = _labelled(project, tmp_path)
    before = json.loads(annotations_export(project=project, fmt="coco").content)

    def elsewhere() -> None:  # another request: new reads of the last read image, merged
        try:
            for r in rs:
                reader_annotation_record(image=images[4], reader=r, trigger_consensus=False,
                                         boxes=[BoxIn("Aortic enlargement", 5, 5, 50, 50)])
            consensus_run_execute(run_id=consensus_run_create(
                project=project, strategy="majority", enqueue=False).pk)
        finally:
            connection.close()

    real, calls = exports._source_data, []

    def first_chunk_then_the_run(*args, **kwargs):
        out = real(*args, **kwargs)
        if not calls:  # the export has read its first chunk: the run lands now
            worker = threading.Thread(target=elsewhere)
            worker.start()
            worker.join()
        calls.append(1)
        return out

    monkeypatch.setattr(exports, "_source_data", first_chunk_then_the_run)
    stream = annotations_export_stream(project=project, fmt="coco", chunk_images=1)
    assert len(calls) == 7  # one chunk per image: the run landed between chunks
    assert json.loads(b"".join(stream.chunks)) == before
    monkeypatch.setattr(exports, "_source_data", real)
    after = json.loads(annotations_export(project=project, fmt="coco").content)
    assert after != before  # the run did change the final labels


@pytest.mark.django_db
def test_bad_data_is_refused_whole_before_the_first_byte_and_not_audited(
        project, tmp_path, admin_user):
    _labelled(project, tmp_path)
    ConsensusBox.objects.filter(consensus_image__image__pseudo_id__in=list(
        Image.objects.order_by("pseudo_id").values_list("pseudo_id", flat=True)[3:5])
    ).update(x_max=10**6)  # far outside the image, in two chunks
    c = APIClient()
    c.force_authenticate(admin_user)
    resp = c.get("/api/projects/test/exports/coco/?source=consensus")
    assert resp.status_code == 400 and not resp.streaming
    error = resp.json()["error"]
    assert error["code"] == "invalid_export" and len(error["detail"]) >= 2
    assert not AuditEvent.objects.filter(action="annotations.export").exists()
    ok = c.get("/api/projects/test/exports/coco/?source=readers")
    assert ok.status_code == 200 and json.loads(ok.getvalue())["annotations"]
    assert AuditEvent.objects.filter(action="annotations.export").count() == 1
