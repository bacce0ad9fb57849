"""Mask reads in the platform (no Label Studio): recorded with versions, refused when
wrong, merged in consensus runs, routed when readers disagree, exported as COCO RLE,
PNG and DICOM SEG that highdicom and pydicom read back to the same pixels."""

from __future__ import annotations

import io
import json
import zipfile

import cv2
import numpy as np
import pydicom
import pytest
from rest_framework.test import APIClient

from annotations.errors import DomainError
from annotations.formats.dicom_seg import read_segmentation
from annotations.formats.mask_formats import coco_rle_to_mask
from annotations.imaging.synthetic.dicom_writer import make_dataset, write_dataset
from annotations.imaging.synthetic.identity import make_identity
from annotations.models import AnnotationMask, ConsensusMask, Image, ReaderAnnotation
from annotations.services import readers
from annotations.services.annotating import MaskIn, reader_annotation_record
from annotations.services.consensus import consensus_run_create, consensus_run_execute
from annotations.services.projects import project_create
from annotations.services.storage import mask_read
from tests.conftest import ingest_paths, write_png
from tests.masks import ellipse

pytestmark = pytest.mark.django_db

H, W = 160, 200


def _ellipse(cx, cy, ax, ay) -> np.ndarray:
    return ellipse((H, W), cx, cy, ax, ay)


@pytest.fixture
def world(tmp_path):
    project = project_create(name="Masks", slug="masks", readers_per_image=3,
                             mask_preset="anatomy", mask_classes=["Pleural effusion"])
    rng = np.random.default_rng(0)
    dcm = tmp_path / "film.dcm"
    ds = make_dataset((rng.random((H, W)) * 4000).astype(np.uint16), rng=rng,
                      identity=make_identity(rng, 0, 0))
    write_dataset(ds, dcm)
    ingest_paths(project, [dcm, write_png(tmp_path / "film.png", seed=3, size=(H, W))])
    rs = [readers.reader_create(email=f"m{i}@example.org", code=f"R{i}") for i in (1, 2, 3)]
    readers.assignments_create(project=project)
    images = list(Image.objects.filter(project=project).order_by("id"))
    assert len(images) == 2 and all((i.height, i.width) == (H, W) for i in images)
    return project, rs, images


def _read(image, reader, **masks):
    return reader_annotation_record(image=image, reader=reader, boxes=[],
                                    masks=[MaskIn(k.replace("_", " "), v)
                                           for k, v in masks.items()],
                                    trigger_consensus=False)


def test_mask_reads_are_versioned_and_replays_are_not(world):
    _project, (r1, *_), images = world
    heart = _ellipse(100, 100, 30, 20)
    a, created = _read(images[0], r1, Heart=heart)
    assert created and a.masks.get().area == int(heart.sum())
    assert (mask_read(a.masks.get().path) == heart).all()
    again, created = _read(images[0], r1, Heart=heart.copy())
    assert not created and again.pk == a.pk
    b, created = _read(images[0], r1, Heart=_ellipse(100, 100, 32, 21))
    assert created and b.version == 2
    assert ReaderAnnotation.objects.get(pk=a.pk).is_current is False
    assert (mask_read(AnnotationMask.objects.get(annotation=a).path) == heart).all()


def test_wrong_masks_are_refused_and_nothing_is_stored(world):
    _project, (r1, *_), images = world
    before = AnnotationMask.objects.count()
    with pytest.raises(DomainError, match="not in this project"):
        _read(images[0], r1, Spleen=_ellipse(100, 100, 30, 20))
    with pytest.raises(DomainError, match="on a 160x200 image"):
        _read(images[0], r1, Heart=np.zeros((H + 1, W), bool))
    assert AnnotationMask.objects.count() == before
    assert not ReaderAnnotation.objects.filter(image=images[0], reader=r1).exists()


def test_consensus_merges_routes_disagreement_and_exports(world):
    project, (r1, r2, r3), images = world
    heart = _ellipse(100, 100, 30, 20)
    lung = _ellipse(50, 80, 25, 50)
    for img in images:
        _read(img, r1, Heart=heart, Right_lung=lung)
        _read(img, r2, Heart=_ellipse(100, 100, 31, 21), Right_lung=lung)
        # R3 outlines a completely different heart: the image's masks disagree
        _read(img, r3, Heart=_ellipse(40, 130, 15, 15) if img == images[1] else heart,
              Right_lung=lung)
    run = consensus_run_create(project=project, enqueue=False)
    consensus_run_execute(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == "done" and run.stats["masks"] == 4
    cm = ConsensusMask.objects.get(consensus_image__run=run, consensus_image__image=images[0],
                                   mask_class__name="Heart")
    assert cm.meta["method"] == "staple" and cm.meta["pairwise_dice"] > 0.9
    low = run.images.get(image=images[1])
    assert low.agreement < 0.7 < run.images.get(image=images[0]).agreement
    assert project.adjudications.filter(image=images[1]).exists()
    assert not project.adjudications.filter(image=images[0]).exists()

    api = APIClient()
    api.force_authenticate(project.created_by or _admin())
    coco = api.get(f"/api/projects/{project.slug}/mask-exports/coco/")
    assert coco.status_code == 200, coco.content
    doc = json.loads(coco.content)
    names = {c["id"]: c["name"] for c in doc["categories"]}
    assert set(names.values()) == {"Right lung", "Left lung", "Heart", "Pleural effusion"}
    first = next(a for a in doc["annotations"] if names[a["category_id"]] == "Heart")
    back = coco_rle_to_mask(first["segmentation"])
    assert (back == mask_read(cm.path)).all() and first["area"] == cm.area

    png = zipfile.ZipFile(io.BytesIO(api.get(
        f"/api/projects/{project.slug}/mask-exports/png/").content))
    got = cv2.imdecode(np.frombuffer(png.read(f"{images[0].pseudo_id}/heart.png"), np.uint8),
                       cv2.IMREAD_GRAYSCALE) > 0
    assert (got == mask_read(cm.path)).all()

    seg_zip = zipfile.ZipFile(io.BytesIO(api.get(
        f"/api/projects/{project.slug}/mask-exports/dicom_seg/").content))
    dicom_image = next(i for i in images if i.dicom_path)
    png_image = next(i for i in images if not i.dicom_path)
    assert json.loads(seg_zip.read("skipped.json")) == [
        {"image": png_image.pseudo_id, "reason": "no DICOM source"}]
    seg = pydicom.dcmread(io.BytesIO(seg_zip.read(f"{dicom_image.pseudo_id}.seg.dcm")))
    source = pydicom.dcmread(str(_media(dicom_image.dicom_path)))
    assert seg.Modality == "SEG"
    assert seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0] \
        .ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert seg.PatientID == source.PatientID  # the de-identified pseudonym, nothing else
    stored = {m.mask_class.name: mask_read(m.path) for m in ConsensusMask.objects.filter(
        consensus_image__run=run, consensus_image__image=dicom_image)}
    read = read_segmentation(seg)  # highdicom
    assert set(read) == set(stored) and all((read[k] == stored[k]).all() for k in stored)
    frames = seg.pixel_array.reshape(-1, H, W)  # pydicom: one frame per segment
    assert [(f > 0).sum() for f in frames] == [int(stored[k].sum()) for k in
                                               ("Right lung", "Heart")]


def test_mask_export_without_masks_is_a_clear_404(world, admin_user):
    project, *_ = world
    api = APIClient()
    api.force_authenticate(admin_user)
    resp = api.get(f"/api/projects/{project.slug}/mask-exports/png/")
    assert resp.status_code == 404 and b"no masks to export" in resp.content
    assert api.get(f"/api/projects/{project.slug}/mask-exports/nifti/").status_code == 400


def test_project_api_creates_mask_classes(admin_user):
    api = APIClient()
    api.force_authenticate(admin_user)
    resp = api.post("/api/projects/", {"name": "Lungs", "mask_preset": "anatomy",
                                       "mask_classes": ["Pneumothorax"]}, format="json")
    assert resp.status_code == 201, resp.content
    got = api.get("/api/projects/lungs/").json()["mask_classes"]
    assert [(m["name"], m["anatomy"]) for m in got] == [
        ("Right lung", True), ("Left lung", True), ("Heart", True), ("Pneumothorax", False)]
    bad = api.post("/api/projects/", {"name": "Bad", "mask_classes": ["a b", "a_b"]},
                   format="json")
    assert bad.status_code == 400


def _admin():
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user(username="a@example.org", is_staff=True)


def _media(path):
    from annotations.services.storage import media_path

    return media_path(path)


def test_adjudicator_masks_become_final_and_they_see_the_readers_masks(world):
    from annotations.models import Adjudication
    from annotations.services.adjudication import adjudication_decide, project_adjudicator_add
    from annotations.services.label_studio_sync import _adjudication_prelabels
    from annotations.services.segmenter_training import final_masks

    project, (r1, r2, r3), images = world
    heart = _ellipse(100, 100, 30, 20)
    for r, m in ((r1, heart), (r2, _ellipse(100, 100, 31, 21)), (r3, _ellipse(40, 130, 15, 15))):
        _read(images[1], r, Heart=m)
    run = consensus_run_create(project=project, enqueue=False)
    consensus_run_execute(run_id=run.pk)
    adj = Adjudication.objects.get(project=project, image=images[1])
    shown = dict(_adjudication_prelabels(adj))
    assert set(shown) == {"reader-R1", "reader-R2", "reader-R3", "consensus"}
    assert [r["type"] for r in shown["reader-R3"]] == ["brushlabels"]
    boss = readers.reader_create(email="boss@example.org", code="ADJ")
    project_adjudicator_add(project=project, reader=boss)
    decided = _ellipse(100, 100, 29, 19)
    adjudication_decide(adjudication=adj, adjudicator=boss, boxes=[],
                        masks=[MaskIn("Heart", decided)])
    final = final_masks(project, [images[1]])[images[1].pseudo_id]
    assert (mask_read(final["Heart"]) == decided).all()


def test_export_follows_the_final_masks_or_a_chosen_run(world, admin_user):
    from annotations.models import Adjudication
    from annotations.services.adjudication import adjudication_decide, project_adjudicator_add

    project, (r1, r2, r3), images = world
    for r, m in ((r1, _ellipse(100, 100, 30, 20)), (r2, _ellipse(100, 100, 31, 21)),
                 (r3, _ellipse(40, 130, 15, 15))):
        _read(images[1], r, Heart=m)
    run = consensus_run_create(project=project, enqueue=False)
    consensus_run_execute(run_id=run.pk)
    boss = readers.reader_create(email="boss2@example.org", code="ADJ2")
    project_adjudicator_add(project=project, reader=boss)
    decided = _ellipse(100, 100, 25, 15)
    adjudication_decide(adjudication=Adjudication.objects.get(image=images[1]),
                        adjudicator=boss, boxes=[], masks=[MaskIn("Heart", decided)])
    api = APIClient()
    api.force_authenticate(admin_user)

    def heart(query=""):
        doc = json.loads(api.get(f"/api/projects/{project.slug}/mask-exports/coco/{query}")
                         .content)
        [ann] = [a for a in doc["annotations"]]
        return coco_rle_to_mask(ann["segmentation"])

    assert (heart() == decided).all()  # the adjudicator's masks are final
    assert not (heart(f"?run={run.pk}") == decided).all()  # that run's consensus
    assert api.get(f"/api/projects/{project.slug}/mask-exports/coco/?run=999999"
                   ).status_code == 404
