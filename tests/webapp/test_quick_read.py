"""Quick read through the API: the promoted model's boxes on an uploaded DICOM that is
de-identified and discarded, or kept through the normal ingest path when asked."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from django.test import Client

from annotations.imaging.synthetic.dicom_writer import make_dataset
from annotations.models import AuditEvent, Image, IngestBatch
from tests.training.films import TRUTH, film, iou
from tests.webapp.world import build_world, promote_tiny_classifier, register_version

pytestmark = pytest.mark.django_db

IDENTITY = {"PatientName": "Doe^Jane", "PatientID": "MRN-4417", "InstitutionName": "St Elsewhere"}


def lesion_dicom(path: Path, seed: int = 0) -> Path:
    """The overfit film as a 12-bit DX DICOM carrying patient identity."""
    ds = make_dataset(film(seed) / 255.0, rng=np.random.default_rng(seed), identity=IDENTITY,
                      voi="window")
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def world(tmp_path, settings):
    settings.MODEL_DIR = tmp_path / "models"
    settings.MODEL_DIR.mkdir()
    return build_world(tmp_path)


def login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def post(client, path: Path | None = None, **fields):
    data = dict(fields)
    if path is not None:
        data["file"] = io.BytesIO(path.read_bytes())
        data["file"].name = path.name
    return client.post("/api/projects/clinic/quick-read/", data)


def test_no_promoted_model_is_a_clear_error(world, admin_user, tmp_path):
    res = post(login(admin_user), lesion_dicom(tmp_path / "a.dcm"))
    assert res.status_code == 404
    assert "no promoted model" in res.json()["error"]["message"]


def test_upload_shows_the_lesion_and_keeps_nothing(world, admin_user, trained_version,
                                                   tmp_path, settings):
    register_version(world.project, trained_version, settings.MODEL_DIR)
    images_before = Image.objects.count()
    res = post(login(admin_user), lesion_dicom(tmp_path / "case.dcm"))
    assert res.status_code == 200, res.content[:300]
    body = res.json()
    assert body["model_version"] == "clinic-v1" and body["kept"] is None
    assert body["image_id"] is None
    assert body["image"].startswith("data:image/png;base64,")
    assert (body["width"], body["height"]) == (128, 128)
    preds = body["predictions"]
    assert preds and preds == sorted(preds, key=lambda p: -p["score"])
    assert min(p["score"] for p in preds) >= settings.QUICK_READ_MIN_SCORE
    best = preds[0]
    assert best["label"] == "Pleural effusion" and best["score"] > 0.5
    assert iou(np.array(best["box_original"]), TRUTH) > 0.5
    # nothing kept: no image, no batch, an empty scratch folder, no identity anywhere
    assert Image.objects.count() == images_before and not IngestBatch.objects.filter(
        source="quick_read").exists()
    assert list((Path(settings.STAGING_ROOT) / "quick-read").iterdir()) == []
    audit = json.dumps(list(AuditEvent.objects.filter(action="quick_read").values("detail")))
    for value in IDENTITY.values():
        assert value.split("^")[0] not in res.content.decode()
        assert value.split("^")[0] not in audit


def test_keep_adds_to_the_project_through_ingest(world, admin_user, trained_version, tmp_path,
                                                 settings, django_capture_on_commit_callbacks):
    register_version(world.project, trained_version, settings.MODEL_DIR)
    with django_capture_on_commit_callbacks(execute=True):
        res = post(login(admin_user), lesion_dicom(tmp_path / "keep.dcm", seed=7), keep="true")
    assert res.status_code == 200, res.content[:300]
    batch = IngestBatch.objects.get(pk=res.json()["kept"]["batch"])
    assert batch.source == "quick_read"
    item = batch.items.get()
    assert item.status == "imported", item.reason
    assert item.image.project == world.project and item.image.dicom_path
    assert res.json()["image_id"] == item.image.pseudo_id


def test_pick_a_stored_image(world, admin_user, trained_version, settings):
    register_version(world.project, trained_version, settings.MODEL_DIR)
    image = world.images[0]
    res = post(login(admin_user), image=image.pseudo_id)
    assert res.status_code == 200
    assert res.json()["image_id"] == image.pseudo_id
    # a radiologist may only pick images assigned to them
    other = world.not_reading(0)
    assert post(login(other.user), image=image.pseudo_id).status_code == 404
    assert post(login(world.reader_of_image(0).user), image=image.pseudo_id).status_code == 200
    # image 4 is still being read: its readers do not get the model's boxes on it...
    reading = login(world.reader_of_image(4).user)
    res = post(reading, image=world.images[4].pseudo_id)
    assert res.status_code == 403 and "hidden" in res.json()["error"]["message"]
    # ...unless the project shows pre-labels to its readers anyway
    world.project.show_prelabels = True
    world.project.save()
    assert post(reading, image=world.images[4].pseudo_id).status_code == 200


def test_stale_scratch_folders_are_swept(world, admin_user, trained_version, tmp_path,
                                         settings):
    import os
    import time

    register_version(world.project, trained_version, settings.MODEL_DIR)
    scratch = Path(settings.STAGING_ROOT) / "quick-read"
    stale = scratch / "quickread-killed"
    stale.mkdir(parents=True)
    (stale / "upload.bin").write_bytes(b"left by a killed request")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    fresh = scratch / "quickread-running"
    fresh.mkdir()
    assert post(login(admin_user), lesion_dicom(tmp_path / "e.dcm")).status_code == 200
    assert not stale.exists() and fresh.exists()  # a request in flight keeps its folder


def test_bad_inputs(world, admin_user, trained_version, tmp_path, settings):
    register_version(world.project, trained_version, settings.MODEL_DIR)
    admin = login(admin_user)
    corrupt = tmp_path / "corrupt.dcm"
    corrupt.write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00" * 40)
    res = post(admin, corrupt)
    assert 400 <= res.status_code < 500
    assert res.json()["error"]["code"] and res.json()["error"]["message"]
    assert post(admin).status_code == 400  # neither file nor image
    assert post(admin, lesion_dicom(tmp_path / "b.dcm"), image="IMG-x").status_code == 400
    settings.QUICK_READ_MAX_BYTES = 1000
    res = post(admin, lesion_dicom(tmp_path / "c.dcm"))
    assert res.status_code == 413
    settings.QUICK_READ_MAX_BYTES = 64 * 1024 * 1024
    reader = login(world.readers["R1"].user)
    res = post(reader, lesion_dicom(tmp_path / "d.dcm"), keep="true")
    assert res.status_code == 403
    assert not IngestBatch.objects.filter(source="quick_read").exists()
    assert list((Path(settings.STAGING_ROOT) / "quick-read").iterdir()) == []


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG of a few KB whose header claims ``width`` x ``height`` pixels
    (10 gigapixels by default: a decoder would allocate GiBs for it)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    rows = zlib.compress(b"\x00" * (width + 1) * 16, 9)  # 16 filter-0 rows of black
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height,
                                                               8, 0, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


@pytest.fixture
def promoted(project):
    """A promoted version row: enough for Quick read to reach the upload."""
    from annotations.models import ModelVersion

    return ModelVersion.objects.create(project=project, name="test-v1", sha256="0" * 64,
                                       config="", promoted=True)


def test_quick_read_png_bomb_is_refused_before_decoding(promoted, admin_user, monkeypatch,
                                                        settings):
    import cv2

    def no_decode(*args, **kwargs):
        raise AssertionError("the PNG was decoded before its size was checked")

    monkeypatch.setattr(cv2, "imdecode", no_decode)
    bomb = png_bomb()
    assert len(bomb) < 16 * 1024
    upload = io.BytesIO(bomb)
    upload.name = "bomb.png"
    res = login(admin_user).post("/api/projects/test/quick-read/", {"file": upload})
    assert res.status_code == 422, res.content[:300]
    assert res.json()["error"]["code"] == "implausible_size"
    assert "100000x100000" in res.json()["error"]["message"]
    assert list((Path(settings.STAGING_ROOT) / "quick-read").iterdir()) == []


def test_quick_read_upload_over_the_limit_is_refused_while_streaming(promoted, admin_user,
                                                                     settings):
    settings.QUICK_READ_MAX_BYTES = 10_000
    upload = io.BytesIO(b"\x00" * 200_000)
    upload.name = "big.dcm"
    res = login(admin_user).post("/api/projects/test/quick-read/", {"file": upload})
    assert res.status_code == 413
    assert res.json()["error"] == {"code": "too_large",
                                   "message": "a file is larger than 10000 bytes"}
    assert not IngestBatch.objects.exists()


def test_quick_read_shows_the_classifiers_findings_and_applies_the_gate(
        world, admin_user, trained_version, settings):
    register_version(world.project, trained_version, settings.MODEL_DIR)
    image = world.images[1]
    plain = post(login(admin_user), image=image.pseudo_id).json()
    assert plain["findings"] is None and plain["predictions"]  # no classifier yet
    classifier = promote_tiny_classifier(world.project)
    res = post(login(admin_user), image=image.pseudo_id).json()
    names = {c["label"] for c in res["findings"]["probabilities"]}
    assert names == set(world.project.label_classes.values_list("name", flat=True))
    assert res["findings"]["model_version"] == classifier.name and not res["two_stage"]
    assert [p["score"] for p in res["predictions"]] == [p["score"] for p in plain["predictions"]]
    # the gate on, at an operating point every film reaches: called normal, no box left
    world.project.two_stage, world.project.two_stage_threshold = True, 0.0
    world.project.save()
    gated = post(login(admin_user), image=image.pseudo_id).json()
    assert gated["two_stage"] and gated["findings"]["called_normal"]
    assert gated["predictions"] == []
    # the detector stays the version that reads: the classifier serves only its findings
    assert gated["model_version"] == plain["model_version"]


def test_viewer_heatmap_follows_the_viewers_blinding(world, admin_user, trained_version,
                                                     settings):
    def heat(user, image, finding="Pleural effusion"):
        return login(user).get(f"/api/images/{image.pseudo_id}/heatmap/",
                               {"finding": finding})

    final, reading = world.images[0], world.images[4]
    assert heat(admin_user, final).status_code == 404  # no classifier promoted yet
    classifier = promote_tiny_classifier(world.project)
    res = heat(admin_user, final)
    assert res.status_code == 200, res.content
    body = res.json()
    assert body["heatmap"].startswith("data:image/png;base64,")
    assert body["classifier"] == classifier.name
    assert heat(admin_user, final, "Nothing such").status_code == 400
    assert heat(admin_user, final, "x" * 10_000).status_code == 400  # bounded, not echoed
    # a reader of an image still being read: hidden, as the model's layer is
    assert heat(world.reader_of_image(4, 0).user, reading).status_code == 403
    # a reader it was never assigned to: not there at all
    assert heat(world.not_reading(0).user, final).status_code == 404
    # final: the image's readers see where the model looked, as they see its boxes
    assert heat(world.reader_of_image(0).user, final).status_code == 200


def test_viewer_explains_one_model_box(world, admin_user, trained_version, settings):
    from annotations.services.prelabeling import prelabel_run_create, prelabel_run_execute

    register_version(world.project, trained_version, settings.MODEL_DIR)
    image = world.images[1]
    done = prelabel_run_execute(run_id=prelabel_run_create(project=world.project,
                                                           images=[image], enqueue=False).pk)
    assert done.status == "done", done.reason
    client = login(admin_user)
    res = client.get(f"/api/images/{image.pseudo_id}/heatmap/", {"box": 0})
    assert res.status_code == 200, res.content
    body = res.json()
    assert body["label"] == "Pleural effusion" and body["detector"] == "clinic-v1"
    assert body["heatmap"].startswith("data:image/png;base64,")
    for bad in ("99", "-1", "first"):
        assert client.get(f"/api/images/{image.pseudo_id}/heatmap/",
                          {"box": bad}).status_code == 400
    reading = world.images[4]  # not final: hidden from its readers like the model layer
    assert login(world.reader_of_image(4, 0).user).get(
        f"/api/images/{reading.pseudo_id}/heatmap/", {"box": 0}).status_code == 403
