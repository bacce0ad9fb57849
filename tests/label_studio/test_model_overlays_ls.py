"""Model overlays through a real Label Studio: the mask model's pre-painted masks and the
classifier's explanation regions arrive as brush predictions of the generated config;
a reader who keeps both has exactly the pre-painted mask stored as their read (its Dice
recorded as 1.0) and the explanation is never read back as a mask; turning the overlay on
later gives existing workspaces its control."""

from __future__ import annotations

import numpy as np
import pytest

from annotations.label_studio.config import EXPLANATION_CONTROL, parse_label_config
from annotations.models import Image, MaskFeedback, ModelVersion, Prediction, ReaderAnnotation
from annotations.services import label_studio_sync as sync
from annotations.services import readers
from annotations.services.projects import project_create, project_update
from annotations.services.storage import mask_read, mask_write
from tests.conftest import ingest_paths, write_png
from tests.label_studio.readers_ls import reader_client
from tests.masks import ellipse

pytestmark = pytest.mark.django_db(transaction=True)

H, W = 240, 320


def _ellipse(cx, cy, ax, ay) -> np.ndarray:
    return ellipse((H, W), cx, cy, ax, ay)


def test_overlays_are_shown_kept_and_only_masks_are_read(label_studio, ls_settings, tmp_path):
    project = project_create(name="Overlay", slug="overlay", readers_per_image=1,
                             mask_preset="anatomy", class_names=["Pleural effusion"],
                             image_classes=["Pneumonia"])
    project_update(project=project, show_prelabels=True, explanation_prelabels=True)
    ingest_paths(project, [write_png(tmp_path / "f.png", seed=5, size=(H, W))])
    img = Image.objects.get(project=project)
    reader = readers.reader_create(email="ov@example.org", code="O1")
    readers.assignments_create(project=project)
    heart = _ellipse(160, 150, 50, 35)
    looked = _ellipse(90, 120, 30, 40)
    hp, hd, ha = mask_write(heart)
    lp, ld, la = mask_write(looked)
    ModelVersion.objects.create(project=project, name="ov-seg", kind="segmenter",
                                sha256="0" * 64, config="", promoted=True)
    Prediction.objects.create(image=img, model_version="ov-det", score=0.8, boxes=[],
                              image_scores={"classifier": "ov-cls", "probs": {"Pneumonia": 0.8},
                                            "explanations": {"Pneumonia": {
                                                "path": lp, "sha256": ld, "area": la,
                                                "p": 0.8}}})
    Prediction.objects.create(image=img, model_version="ov-seg", score=0.9, boxes=[],
                              masks={"segmenter": "ov-seg", "classes": {"Heart": {
                                  "path": hp, "sha256": hd, "area": ha, "score": 0.9}}})
    assert sync.assignments_push(project) == 1
    ws = reader.workspaces.get(kind="reading")
    offered = parse_label_config(sync.ws_client(ws).get_project(ws.ls_project_id)
                                 ["label_config"])
    assert offered.explanation_classes == ("Pleural effusion", "Pneumonia")
    task = ws.tasks.get(image=img)
    assert task.prediction_id and task.mask_prediction_id
    client = reader_client(label_studio, reader)
    [shown] = client._call("GET", f"/api/tasks/{task.ls_task_id}/")["predictions"]
    by_control = {}
    for r in shown["result"]:
        by_control.setdefault(r["from_name"], []).append(r)
    assert [r["value"]["brushlabels"] for r in by_control[EXPLANATION_CONTROL]] == \
        [["Pneumonia"]]
    assert [r["value"]["brushlabels"] for r in by_control["mask"]] == [["Heart"]]
    assert any(r["type"] == "choices" for r in shown["result"])  # Pneumonia pre-selected
    # the reader accepts everything shown, as Label Studio would submit it
    client.create_annotation(task.ls_task_id, shown["result"])
    read = ReaderAnnotation.objects.get(image=img, reader=reader, is_current=True)
    assert [m.mask_class.name for m in read.masks.all()] == ["Heart"]  # not the overlay
    assert (mask_read(read.masks.get().path) == heart).all()
    assert read.image_labels == ["Pneumonia"]
    [fb] = MaskFeedback.objects.filter(reader=reader)
    assert fb.mask_class.name == "Heart" and fb.dice == pytest.approx(1.0)


def test_a_lost_premask_file_costs_the_feedback_never_the_read(label_studio, ls_settings,
                                                                tmp_path):
    from annotations.services.storage import media_path

    project = project_create(name="Lost", slug="lost", readers_per_image=1,
                             mask_preset="anatomy")
    project_update(project=project, show_prelabels=True)
    ingest_paths(project, [write_png(tmp_path / "l.png", seed=8, size=(H, W))])
    img = Image.objects.get(project=project)
    reader = readers.reader_create(email="lost@example.org", code="X1")
    readers.assignments_create(project=project)
    heart = _ellipse(150, 140, 45, 30)
    hp, hd, ha = mask_write(heart)
    Prediction.objects.create(image=img, model_version="lost-seg", score=0.9, boxes=[],
                              masks={"segmenter": "lost-seg", "classes": {"Heart": {
                                  "path": hp, "sha256": hd, "area": ha, "score": 0.9}}})
    assert sync.assignments_push(project) == 1
    task = reader.workspaces.get(kind="reading").tasks.get(image=img)
    media_path(hp).unlink()  # the pre-painted mask's file is gone when the read arrives
    mine = _ellipse(150, 140, 40, 28)
    from annotations.label_studio.masks import brush_region

    reader_client(label_studio, reader).create_annotation(task.ls_task_id,
                                                          [brush_region(mine, "Heart")])
    read = ReaderAnnotation.objects.get(image=img, reader=reader, is_current=True)
    assert (mask_read(read.masks.get().path) == mine).all()
    assert not MaskFeedback.objects.filter(reader=reader).exists()


def test_turning_the_overlay_on_gives_existing_workspaces_its_control(label_studio,
                                                                      ls_settings, tmp_path):
    project = project_create(name="Later", slug="later", readers_per_image=1)
    ingest_paths(project, [write_png(tmp_path / "g.png", seed=6, size=(H, W))])
    reader = readers.reader_create(email="later@example.org", code="L1")
    readers.assignments_create(project=project)
    sync.assignments_push(project)
    ws = reader.workspaces.get(kind="reading")
    config = lambda: parse_label_config(  # noqa: E731
        sync.ws_client(ws).get_project(ws.ls_project_id)["label_config"])
    assert config().explanation_classes == ()
    project_update(project=project, explanation_prelabels=True)  # the handler's task runs
    assert "Cardiomegaly" in config().explanation_classes
    assert config().box_classes  # nothing else changed
