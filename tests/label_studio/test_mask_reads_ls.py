"""Masks painted through a real Label Studio (acceptance of mask reads).

Readers paint with the brush (or outline with the polygon tool) of the platform-generated
labeling config; the platform stores exactly the painted pixels, versions a changed mask,
merges the readers' masks by STAPLE when the last read arrives, and no reader reaches
another reader's masks.
"""

from __future__ import annotations

import numpy as np
import pytest

from annotations.label_studio.config import parse_label_config
from annotations.label_studio.masks import brush_region
from annotations.models import ConsensusMask, ConsensusRun, Image, ReaderAnnotation
from annotations.services import label_studio_sync as sync
from annotations.services import readers
from annotations.services.consensus import consensus_run_replay
from annotations.services.projects import project_create
from annotations.services.storage import mask_read
from tests.conftest import ingest_paths, write_png
from tests.label_studio.readers_ls import reader_client
from tests.masks import ellipse

pytestmark = pytest.mark.django_db(transaction=True)

W, H = 400, 360


def _ellipse(cx, cy, ax, ay) -> np.ndarray:
    return ellipse((H, W), cx, cy, ax, ay)


def _setup(tmp_path):
    project = project_create(name="Anatomy", slug="anatomy", readers_per_image=3,
                             mask_preset="anatomy")
    files = [write_png(tmp_path / f"cxr{i}.png", seed=90 + i, size=(H, W)) for i in range(2)]
    ingest_paths(project, files)
    rs = [readers.reader_create(email=f"seg{i}@example.org", code=f"R{i}") for i in (1, 2, 3)]
    readers.assignments_create(project=project)
    assert sync.assignments_push(project) == 6
    return project, rs, list(Image.objects.filter(project=project).order_by("id"))


def _paint(label_studio, reader, image, regions):
    task = reader.workspaces.get(kind="reading").tasks.get(image=image)
    return reader_client(label_studio, reader).create_annotation(task.ls_task_id, regions)


def test_painted_masks_are_stored_exactly_and_merged_by_staple(label_studio, ls_settings,
                                                              tmp_path):
    project, (r1, r2, r3), images = _setup(tmp_path)
    img = images[0]
    assert (img.width, img.height) == (W, H)
    ws = r1.workspaces.get(kind="reading")
    offered = parse_label_config(sync.ws_client(ws).get_project(ws.ls_project_id)["label_config"])
    assert offered.mask_classes == ("Right lung", "Left lung", "Heart")
    heart = _ellipse(200, 230, 60, 45)
    lung = _ellipse(110, 150, 55, 110)
    # R1 paints the heart in two strokes (two regions of one class) and a lung
    top, bottom = heart.copy(), heart.copy()
    top[230:] = False
    bottom[:230] = False
    _paint(label_studio, r1, img, [brush_region(top, "Heart"), brush_region(bottom, "Heart"),
                                   brush_region(lung, "Right lung")])
    # R2 paints a slightly larger heart; R3 leaks far into the left lung field
    big = _ellipse(200, 230, 63, 47)
    leak = heart | _ellipse(300, 170, 40, 40)
    _paint(label_studio, r2, img, [brush_region(big, "Heart")])
    _paint(label_studio, r3, img, [brush_region(leak, "Heart")])
    got = {a.reader.code: a for a in ReaderAnnotation.objects.filter(image=img, is_current=True)}
    m1 = {m.mask_class.name: mask_read(m.path) for m in got["R1"].masks.all()}
    assert set(m1) == {"Heart", "Right lung"}
    assert (m1["Heart"] == heart).all() and (m1["Right lung"] == lung).all()  # exactly
    assert (mask_read(got["R3"].masks.get().path) == leak).all()
    run = ConsensusRun.objects.get(project=project, trigger="reads_complete")
    assert run.status == "done", run.reason
    cm = {m.mask_class.name: m for m in ConsensusMask.objects.filter(consensus_image__run=run)}
    assert set(cm) == {"Heart", "Right lung"}
    consensus = mask_read(cm["Heart"].path)
    assert not (consensus & _ellipse(300, 170, 40, 40) & ~big).any()  # the leak is outvoted
    meta = cm["Heart"].meta
    assert meta["method"] == "staple" and min(meta["specificity"],
                                              key=meta["specificity"].get) == "R3"
    # the right lung: painted by R1 alone, the two others said it is absent
    assert cm["Right lung"].meta["readers"] == ["R1", "R2", "R3"]
    assert consensus_run_replay(run) == run.digest
    # blinding: R1 reaches neither R3's task nor its masks
    other = r3.workspaces.get(kind="reading").tasks.get(image=img)
    with pytest.raises(Exception, match="40[34]"):
        reader_client(label_studio, r1)._call("GET", f"/api/tasks/{other.ls_task_id}/")


def test_a_changed_mask_is_a_new_version_and_a_replay_is_not(label_studio, ls_settings,
                                                             tmp_path):
    _project, (r1, _r2, _r3), images = _setup(tmp_path)
    img = images[1]
    heart = _ellipse(200, 230, 60, 45)
    ann = _paint(label_studio, r1, img, [brush_region(heart, "Heart")])
    first = ReaderAnnotation.objects.get(image=img, reader=r1, is_current=True)
    task = r1.workspaces.get(kind="reading").tasks.get(image=img)
    client = reader_client(label_studio, r1)
    ws = r1.workspaces.get(kind="reading")
    assert sync.workspace_reconcile(ws)["created"] == 0  # same pixels again: unchanged
    grown = _ellipse(200, 230, 70, 50)
    client.update_annotation(ann["id"], [brush_region(grown, "Heart")])
    sync.workspace_reconcile(ws)
    now = ReaderAnnotation.objects.get(image=img, reader=r1, is_current=True)
    assert now.version == first.version + 1
    assert (mask_read(now.masks.get().path) == grown).all()
    assert (mask_read(first.masks.get().path) == heart).all()  # the old version kept
    assert task.ls_task_id


def test_a_forged_mask_under_a_real_annotation_is_rejected_and_a_frozen_mask_stays(
        label_studio, ls_settings, tmp_path, live_server):
    """A reader who knows their webhook secret posts A's event with other paint (and
    with an oversized code): both rejected, the stored mask unchanged.  Once the image is
    final, repainting in Label Studio is a protocol violation; the read stays."""
    import json

    from annotations.models import ProtocolViolation, WebhookEvent
    from tests.label_studio.test_webhook_forgery import _post

    project, (r1, r2, r3), images = _setup(tmp_path)
    img = images[0]
    heart = _ellipse(200, 230, 60, 45)
    ann = _paint(label_studio, r1, img, [brush_region(heart, "Heart")])
    ws = r1.workspaces.get(kind="reading")
    stored = ReaderAnnotation.objects.get(image=img, reader=r1, is_current=True)
    event = WebhookEvent.objects.get(action="ANNOTATION_CREATED", workspace=ws)
    world = {"url": live_server.url}
    for rle in (brush_region(_ellipse(100, 100, 80, 80), "Heart")["value"]["rle"],
                [255] * 400_000):
        forged = json.loads(json.dumps(event.payload))
        forged["annotation"]["result"][0]["value"]["rle"] = rle
        assert _post(world, ws, forged).status_code == 200
    rejected = WebhookEvent.objects.filter(workspace=ws).exclude(pk=event.pk)
    assert [e.status for e in rejected] == ["rejected", "rejected"]
    assert all(e.reason.startswith("stale_webhook") for e in rejected), \
        [e.reason for e in rejected]
    now = ReaderAnnotation.objects.get(image=img, reader=r1, is_current=True)
    assert now.pk == stored.pk and (mask_read(now.masks.get().path) == heart).all()

    _paint(label_studio, r2, img, [brush_region(heart, "Heart")])
    _paint(label_studio, r3, img, [brush_region(heart, "Heart")])
    assert ConsensusRun.objects.get(project=project, trigger="reads_complete").status == "done"
    reader_client(label_studio, r1).update_annotation(
        ann["id"], [brush_region(_ellipse(200, 230, 90, 70), "Heart")])
    sync.workspace_reconcile(ws)
    assert ProtocolViolation.objects.filter(workspace=ws, kind="after_unblinding").exists()
    kept = ReaderAnnotation.objects.get(image=img, reader=r1, is_current=True)
    assert kept.pk == stored.pk and (mask_read(kept.masks.get().path) == heart).all()
    detail = ProtocolViolation.objects.get(workspace=ws).detail
    assert set(detail["result"][0]["value"]["rle"]) == {"bytes", "sha256"}  # no paint kept
