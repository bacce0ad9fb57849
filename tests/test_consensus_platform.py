"""Consensus in the platform: runs from stored reads, exact versions, replay,
triggers, imports (all or nothing), agreement and exports through the API."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from annotations.errors import DomainError
from annotations.formats import vinbigdata
from annotations.models import ConsensusRun, Image, ReaderAnnotation
from annotations.services import readers
from annotations.services.annotating import BoxIn, reader_annotation_record
from annotations.services.consensus import (
    consensus_run_create,
    consensus_run_execute,
    consensus_run_replay,
)
from tests.conftest import ingest_paths

pytestmark = pytest.mark.django_db


@pytest.fixture
def setup(project, admin_user, png_images):
    ingest_paths(project, png_images)
    rs = [readers.reader_create(email=f"r{i}@example.org", code=f"R{i}") for i in (1, 2, 3)]
    readers.assignments_create(project=project)  # k = 3: every reader reads every image
    images = list(Image.objects.order_by("id"))
    return project, rs, images


NODULE = "Nodule/Mass"
EFFUSION = "Pleural effusion"


def _read(image, reader, boxes, labels=(), **kw):
    return reader_annotation_record(image=image, reader=reader,
                                    boxes=[BoxIn(*b) for b in boxes], image_labels=labels, **kw)


def test_third_read_triggers_consensus(setup, django_capture_on_commit_callbacks):
    project, (r1, r2, r3), images = setup
    img = images[0]
    with django_capture_on_commit_callbacks(execute=True):
        _read(img, r1, [(NODULE, 10, 10, 50, 50)])
        _read(img, r2, [(NODULE, 12, 11, 52, 49)])
        assert not ConsensusRun.objects.exists()
        _read(img, r3, [], ["No finding"])
    run = ConsensusRun.objects.get()
    assert run.trigger == "reads_complete" and run.status == "done"
    assert run.image_scope == [img.pseudo_id]
    assert run.annotations.count() == 3
    row = run.images.get()
    box = row.boxes.get()
    assert box.label_class.name == NODULE and sorted(box.support) == ["R1", "R2"]
    assert box.x_min == pytest.approx(11) and box.x_max == pytest.approx(51)
    assert row.image_labels == [] and row.n_readers == 3


def test_run_records_exact_versions_and_replays(setup):
    project, (r1, r2, r3), images = setup
    for img in images:
        _read(img, r1, [(NODULE, 10, 10, 50, 50)], trigger_consensus=False)
        _read(img, r2, [(NODULE, 14, 10, 54, 50), (EFFUSION, 100, 150, 200, 230)],
              trigger_consensus=False)
        _read(img, r3, [(EFFUSION, 102, 148, 198, 232)], trigger_consensus=False)
    run = consensus_run_create(project=project, strategy="majority",
                               params={"quorum": 0.5}, enqueue=False)
    run = consensus_run_execute(run_id=run.pk)
    assert run.status == "done" and run.stats["images"] == 4 and run.stats["boxes"] == 8
    digest = run.digest
    # reader 1 changes their mind: a new version; the old run still replays identically
    ann, created = _read(images[0], r1, [], ["No finding"], trigger_consensus=False)
    assert created and ann.version == 2
    assert consensus_run_replay(run) == digest
    again = consensus_run_execute(run_id=consensus_run_create(
        project=project, strategy="majority", params={"quorum": 0.5}, enqueue=False).pk)
    assert again.digest != digest
    same = consensus_run_execute(run_id=consensus_run_create(
        project=project, strategy="majority", params={"quorum": 0.5}, enqueue=False).pk)
    assert same.digest == again.digest
    # executing a finished run again changes nothing (idempotent task)
    assert consensus_run_execute(run_id=run.pk).digest == digest


def test_replayed_and_stale_events_change_nothing(setup):
    project, (r1, _, _), images = setup
    import datetime as dt

    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    a1, new = _read(images[0], r1, [(NODULE, 10, 10, 50, 50)], external_updated_at=t0,
                    trigger_consensus=False)
    assert new
    _, new = _read(images[0], r1, [(NODULE, 10, 10, 50, 50)], external_updated_at=t0,
                   trigger_consensus=False)
    assert not new  # replay
    _, new = _read(images[0], r1, [(NODULE, 20, 20, 60, 60)],
                   external_updated_at=t0 - dt.timedelta(minutes=5), trigger_consensus=False)
    assert not new  # older than what we have: out-of-order delivery
    assert ReaderAnnotation.objects.filter(reader=r1).count() == 1


@pytest.mark.parametrize("boxes,labels,code", [
    ([("Unicorn", 1, 1, 5, 5)], (), "unknown_label"),
    ([], ("Very sick",), "unknown_label"),
    ([(NODULE, 10, 10, 5000, 50)], (), "invalid_box"),
    ([(NODULE, 10, 10, 10, 50)], (), "invalid_box"),
])
def test_bad_reads_are_refused_and_store_nothing(setup, boxes, labels, code):
    _, (r1, _, _), images = setup
    with pytest.raises(DomainError) as err:
        _read(images[0], r1, boxes, labels)
    assert err.value.code == code
    assert not ReaderAnnotation.objects.exists()


def _csv(rows: list[str]) -> SimpleUploadedFile:
    text = "image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max\n" + "\n".join(rows)
    return SimpleUploadedFile("reads.csv", text.encode(), content_type="text/csv")


def test_vinbigdata_import_agreement_and_export(setup, admin_user,
                                                django_capture_on_commit_callbacks):
    project, _, images = setup
    c = APIClient()
    c.force_authenticate(admin_user)
    rows = []
    for stem in ("img0", "img1"):
        rows += [f"{stem},Nodule/Mass,8,R9,10,10,50,50", f"{stem},Nodule/Mass,8,R10,12,10,52,50",
                 f"{stem},No finding,14,R8,,,,"]
    with django_capture_on_commit_callbacks(execute=True):
        resp = c.post("/api/projects/test/imports/", {"file": _csv(rows),
                                                      "format": "vinbigdata"},
                      format="multipart")
    assert resp.status_code == 201, resp.content
    summary = resp.json()
    assert summary["annotations_created"] == 6 and summary["images"] == 2
    run = ConsensusRun.objects.get(pk=summary["consensus_run"])
    assert run.status == "done" and run.trigger == "import"

    report = c.get(f"/api/projects/test/agreement/?run={run.pk}").json()
    pair = next(p for p in report["pairwise"]
                if {p["reader_a"], p["reader_b"]} == {"R10", "R9"} and p["class_id"] == 8)
    assert pair["f1"] == 1.0 and pair["class_name"] == NODULE
    vs = {r["reader"]: r for r in report["reader_vs_consensus"]}
    assert vs["R9"]["sensitivity"] == 1.0 and vs["R8"]["sensitivity"] == 0.0

    out = c.get("/api/projects/test/exports/vinbigdata/?source=consensus")
    assert out.status_code == 200
    back = vinbigdata.parse_csv(out.getvalue().decode())
    assert len(back) == 2 and all(len(r.reads[0].boxes) == 1 for r in back)
    ids = {r.image_id for r in back}
    assert ids <= {i.pseudo_id for i in images}  # pseudonymous ids only

    per_reader = c.get("/api/projects/test/exports/vinbigdata/?source=readers")
    assert {r.reader for im in vinbigdata.parse_csv(per_reader.getvalue().decode())
            for r in im.reads} == {"R8", "R9", "R10"}


def test_malformed_import_reports_lines_and_commits_nothing(setup, admin_user):
    c = APIClient()
    c.force_authenticate(admin_user)
    rows = ["img0,Nodule/Mass,8,R9,10,10,50,50", "img0,Nodule/Mass,8,R10,10,10,abc,50",
            "img1,Cardiomegaly,3,R9,60,10,20,50"]
    resp = c.post("/api/projects/test/imports/", {"file": _csv(rows)}, format="multipart")
    assert resp.status_code == 400
    err = resp.json()["error"]
    assert err["code"] == "invalid_csv" and {d["line"] for d in err["detail"]} == {3, 4}
    unknown = c.post("/api/projects/test/imports/", {"file": _csv(
        ["img0,Nodule/Mass,8,R9,10,10,50,50", "nope,Nodule/Mass,8,R9,10,10,50,50"])},
        format="multipart")
    assert unknown.json()["error"]["code"] == "unknown_images"
    assert unknown.json()["error"]["detail"] == ["nope"]
    assert not ReaderAnnotation.objects.exists()


def test_invalid_strategy_is_a_clean_400(setup, admin_user):
    c = APIClient()
    c.force_authenticate(admin_user)
    resp = c.post("/api/projects/test/consensus-runs/", {"strategy": "coin_flip"}, format="json")
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "unknown_strategy"
    resp = c.post("/api/projects/test/consensus-runs/",
                  {"strategy": "wbf", "params": {"conf_type": "median"}}, format="json")
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_params"
    assert not ConsensusRun.objects.exists()


@pytest.mark.parametrize("url", ["/api/projects/test/consensus-runs/",
                                 "/api/projects/test/agreement/",
                                 "/api/projects/test/exports/vinbigdata/"])
def test_radiologists_cannot_see_consensus_or_agreement(setup, url):
    _, (r1, _, _), _ = setup
    c = APIClient()
    c.force_authenticate(r1.user)
    assert c.get(url).status_code == 403
    assert APIClient().get(url).status_code == 401
