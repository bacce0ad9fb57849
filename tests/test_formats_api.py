"""Exports and imports in every format through the API, round-tripped."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from annotations.formats.coco import parse_coco
from annotations.models import Image, ReaderAnnotation
from annotations.services import readers
from annotations.services.annotating import BoxIn, reader_annotation_record
from annotations.services.consensus import consensus_run_create, consensus_run_execute
from annotations.services.exports import project_taxonomy
from tests.conftest import ingest_paths, write_png

pytestmark = pytest.mark.django_db


@pytest.fixture
def labelled(project, admin_user, png_images):
    ingest_paths(project, png_images)
    rs = [readers.reader_create(email=f"r{i}@example.org", code=f"R{i}") for i in (1, 2, 3)]
    readers.assignments_create(project=project)
    images = list(Image.objects.order_by("id"))
    for img in images[:3]:
        for r in rs:
            reader_annotation_record(image=img, reader=r, trigger_consensus=False,
                                     boxes=[BoxIn("Cardiomegaly", 40, 60, 160, 200)])
    for r in rs:  # one normal image
        reader_annotation_record(image=images[3], reader=r, boxes=[],
                                 image_labels=["No finding"], trigger_consensus=False)
    consensus_run_execute(run_id=consensus_run_create(project=project, strategy="majority",
                                                      enqueue=False).pk)
    c = APIClient()
    c.force_authenticate(admin_user)
    return c, images


def test_coco_export_is_training_ready(labelled, project):
    c, images = labelled
    resp = c.get("/api/projects/test/exports/coco/")
    assert resp.status_code == 200 and resp["Content-Type"] == "application/json"
    body = resp.getvalue()  # streamed
    data = json.loads(body)
    assert len(data["images"]) == 4  # the "No finding" image stays in the training set
    assert len(data["annotations"]) == 3
    ann = data["annotations"][0]
    assert ann["bbox"] == [40.0, 60.0, 120.0, 140.0] and ann["area"] == 120.0 * 140.0
    back = parse_coco(body, project_taxonomy(project))
    assert {r.image_id for r in back} == {i.pseudo_id for i in images}


@pytest.mark.parametrize("fmt,member", [("yolo", "classes.txt"), ("voc", None)])
def test_multi_file_formats_come_as_zip(labelled, fmt, member):
    c, _ = labelled
    resp = c.get(f"/api/projects/test/exports/{fmt}/")
    assert resp.status_code == 200 and resp["Content-Type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(resp.getvalue())).namelist()
    assert len(names) >= 4
    if member:
        assert member in names


def test_coco_reads_round_trip_through_import(labelled, project, admin_user):
    c, images = labelled
    exported = c.get("/api/projects/test/exports/coco/?source=readers").getvalue()
    ReaderAnnotation.objects.all().delete()
    resp = c.post("/api/projects/test/imports/", {
        "file": SimpleUploadedFile("reads.json", exported), "format": "coco"},
        format="multipart")
    assert resp.status_code == 201, resp.content
    assert resp.json()["annotations_created"] == 12
    assert ReaderAnnotation.objects.filter(image_labels=["No finding"]).count() == 3


def test_voc_zip_round_trip_through_import(labelled, project):
    c, _ = labelled
    exported = c.get("/api/projects/test/exports/voc/?source=readers&reader=R2").getvalue()
    ReaderAnnotation.objects.all().delete()
    resp = c.post("/api/projects/test/imports/", {
        "file": SimpleUploadedFile("voc.zip", exported), "format": "voc", "reader": "R2"},
        format="multipart")
    assert resp.status_code == 201, resp.content
    boxes = {(b.x_min, b.y_min, b.x_max, b.y_max) for a in ReaderAnnotation.objects.all()
             for b in a.boxes.all()}
    assert boxes == {(40.0, 60.0, 160.0, 200.0)}


def test_nih_box_list_import(admin_user, tmp_path):
    files = [write_png(tmp_path / "nih" / f"0000000{i}_000.png", seed=i, size=(1024, 1024))
             for i in (1, 2)]
    from annotations.services.projects import project_create

    nih = project_create(name="NIH", slug="nih", taxonomy_preset="nih")
    ingest_paths(nih, files)
    text = ("Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
            "00000001_000.png,Cardiomegaly,100,200,300,250\n"
            "00000002_000.png,Nodule,500,400,40,44\n")
    c = APIClient()
    c.force_authenticate(admin_user)
    resp = c.post("/api/projects/nih/imports/", {
        "file": SimpleUploadedFile("BBox_List_2017.csv", text.encode()), "format": "nih"},
        format="multipart")
    assert resp.status_code == 201, resp.content
    box = ReaderAnnotation.objects.get(image__project=nih, boxes__label_class__name="Nodule"
                                       ).boxes.get()
    assert (box.x_min, box.y_min, box.x_max, box.y_max) == (500, 400, 540, 444)
    bad = c.post("/api/projects/nih/imports/", {
        "file": SimpleUploadedFile("b.csv", (text + "00000002_000.png,Dragon,1,1,5,5\n").encode()),
        "format": "nih"}, format="multipart")
    assert bad.status_code == 400 and bad.json()["error"]["detail"][0]["line"] == 4
