"""The reading protocol against a real Label Studio server.

The platform is served by pytest-django's live server so Label Studio can call
its webhooks and load its signed image URLs; Celery runs eagerly, so a webhook
is processed right after it is stored.
"""

from __future__ import annotations

import json

import pytest
import requests

from annotations.errors import DomainError
from annotations.label_studio.regions import build_result
from annotations.models import (
    ConsensusRun,
    Image,
    ProtocolViolation,
    ReaderAnnotation,
    ReconcileRun,
    WebhookEvent,
    Workspace,
)
from annotations.services import label_studio_sync as sync
from annotations.services import readers
from annotations.services.adjudication import project_adjudicator_add
from annotations.tasks import label_studio_reconcile_task
from tests.conftest import ingest_paths, write_png
from tests.label_studio.readers_ls import reader_client

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def platform(label_studio, ls_settings, project, tmp_path):
    files = [write_png(tmp_path / "in" / f"cxr{i}.png", seed=40 + i, size=(600, 500))
             for i in range(3)]
    ingest_paths(project, files)
    rs = [readers.reader_create(email=f"reader{i}@example.org", code=f"R{i}")
          for i in (1, 2, 3)]
    readers.assignments_create(project=project)
    assert sync.assignments_push(project) == 9
    return project, rs, list(Image.objects.order_by("id"))


def _reader_client(label_studio, reader):
    return reader_client(label_studio, reader)


def _task(reader, image):
    return reader.workspaces.get(kind="reading").tasks.get(image=image)


def _annotate(label_studio, reader, image, box, label="Nodule/Mass"):
    result = build_result([box], [label], original_width=image.width,
                          original_height=image.height)
    return _reader_client(label_studio, reader).create_annotation(
        _task(reader, image).ls_task_id, result)


def test_each_readers_boxes_arrive_attributed(platform, label_studio):
    project, rs, images = platform
    # blinding: one workspace (and organization) per reader, each with that reader's images
    assert Workspace.objects.filter(project=project, kind="reading").count() == 3
    assert len({w.ls_organization_id for w in Workspace.objects.all()}) == 3
    for r in rs:
        ws = r.workspaces.get()
        assert ws.tasks.count() == 3
        tasks = sync.ws_client(ws).list_tasks(ws.ls_project_id)
        assert all(set(t["data"]) == {"image", "image_id"} for t in tasks)
        # the task's image URL is the platform's signed URL and it loads
        url = tasks[0]["data"]["image"]
        assert "sig=" in url and requests.get(url, timeout=10).status_code == 200
    img = images[0]
    boxes = {"R1": [100, 120, 200, 260], "R2": [104, 118, 206, 262], "R3": [98, 125, 199, 255]}
    for r in rs:
        _annotate(label_studio, r, img, boxes[r.code])
    got = {a.reader.code: a for a in ReaderAnnotation.objects.filter(image=img)}
    assert set(got) == {"R1", "R2", "R3"}
    for code, ann in got.items():
        assert ann.source == "label_studio" and ann.external_id
        b = ann.boxes.get()
        assert [b.x_min, b.y_min, b.x_max, b.y_max] == pytest.approx(boxes[code], abs=1e-6)
        assert b.label_class.name == "Nodule/Mass"
    # the third read completed the image: its consensus ran
    run = ConsensusRun.objects.get(trigger="reads_complete")
    assert run.status == "done" and run.images.get().boxes.count() == 1


def test_missed_webhooks_are_repaired_by_reconcile(platform, label_studio, settings):
    project, rs, images = platform
    r1, r2, _ = rs
    kept = _annotate(label_studio, r1, images[0], [10, 10, 80, 90])
    assert ReaderAnnotation.objects.filter(reader=r1).count() == 1
    settings.LABEL_STUDIO_WEBHOOK_SECRET = "rotated-" + "x" * 30  # Label Studio's now wrong
    _annotate(label_studio, r1, images[1], [30, 40, 120, 150], "Cardiomegaly")
    _annotate(label_studio, r2, images[1], [32, 44, 118, 149], "Cardiomegaly")
    sync.ws_client(r1.workspaces.get()).delete_annotation(int(kept["id"]))
    assert ReaderAnnotation.objects.filter(image=images[1]).count() == 0  # events lost
    counts = sync.reconcile_all()
    assert counts["created"] == 2 and counts["withdrawn"] == 1
    current = ReaderAnnotation.objects.filter(is_current=True)
    assert sorted((a.reader.code, a.image_id) for a in current) == [
        ("R1", images[1].pk), ("R2", images[1].pk)]
    assert sync.reconcile_all()["created"] == 0  # twice changes nothing
    assert ReaderAnnotation.objects.filter(is_current=True).count() == 2


def test_annotation_by_anyone_but_the_workspaces_reader_is_flagged(platform, label_studio):
    project, (r1, r2, _), images = platform
    task = _task(r1, images[2])
    result = build_result([[50, 50, 90, 90]], ["Nodule/Mass"], original_width=images[2].width,
                          original_height=images[2].height)
    # R2 cannot even reach R1's workspace ...
    with pytest.raises(DomainError):
        _reader_client(label_studio, r2).create_annotation(task.ls_task_id, result)
    assert not ReaderAnnotation.objects.exists()
    # ... and an annotation there by anyone else (here the service account) never counts
    sync.ws_client(task.workspace).create_annotation(task.ls_task_id, result)
    violation = ProtocolViolation.objects.get()
    assert violation.workspace.reader == r1 and violation.kind == "foreign_annotator"
    assert violation.ls_user_id == task.workspace.ls_service_user_id
    assert not ReaderAnnotation.objects.exists()
    assert sync.reconcile_all()["violation"] == 1  # seen again, recorded once
    assert ProtocolViolation.objects.count() == 1


def test_replayed_and_bad_webhooks(platform, label_studio, live_server, settings):
    project, (r1, _, _), images = platform
    ann = _annotate(label_studio, r1, images[0], [10, 10, 60, 60])
    event = WebhookEvent.objects.get(action="ANNOTATION_CREATED")
    ws = r1.workspaces.get()
    url = f"{live_server.url}/api/label-studio/webhook/{ws.pk}/"
    headers = {settings.LABEL_STUDIO_WEBHOOK_HEADER: sync.webhook_secret(ws),
               "Content-Type": "application/json"}
    body = json.dumps(event.payload).encode()
    replay = requests.post(url, data=body, headers=headers, timeout=10)
    assert replay.status_code == 200
    assert ReaderAnnotation.objects.filter(reader=r1).count() == 1
    assert requests.post(url, data=b"{nope", headers=headers, timeout=10).status_code == 400
    wrong = dict(headers, **{settings.LABEL_STUDIO_WEBHOOK_HEADER: "guess"})
    assert requests.post(url, data=body, headers=wrong, timeout=10).status_code == 403
    # a task Label Studio does not say, and content it does not hold: rejected, nothing lost
    unknown = dict(event.payload, annotation=dict(event.payload["annotation"], task=999999))
    requests.post(url, data=json.dumps(unknown).encode(), headers=headers, timeout=10)
    bad = json.loads(body)
    bad["annotation"]["result"][0]["value"]["rectanglelabels"] = ["Dragon"]
    bad["annotation"]["updated_at"] = "2099-01-01T00:00:00Z"
    requests.post(url, data=json.dumps(bad).encode(), headers=headers, timeout=10)
    rejected = {e.reason.split(":")[0] for e in WebhookEvent.objects.filter(status="rejected")}
    assert rejected == {"forbidden", "forged_webhook", "stale_webhook"}
    kept = ReaderAnnotation.objects.get(reader=r1, is_current=True)
    assert kept.external_id == str(ann["id"]) and kept.boxes.get().label_class.name == \
        "Nodule/Mass"


def test_prelabels_shown_and_feedback_recorded(label_studio, ls_settings, project,
                                               tmp_path, admin_user):
    from rest_framework.test import APIClient

    from annotations.models import Prediction

    project.show_prelabels, project.readers_per_image = True, 1
    project.save()
    files = [write_png(tmp_path / f"p{i}.png", seed=90 + i, size=(600, 500)) for i in (0, 1)]
    ingest_paths(project, files)
    reader = readers.reader_create(email="pre@example.org", code="R7")
    readers.assignments_create(project=project)
    img = Image.objects.order_by("id").first()
    pred = Prediction.objects.create(image=img, model_version="m-test", score=0.9, boxes=[
        {"label": "Nodule/Mass", "box": [100, 100, 200, 200], "score": 0.9},
        {"label": "Cardiomegaly", "box": [300, 250, 500, 450], "score": 0.6}])
    sync.assignments_push(project)
    task = _task(reader, img)
    shown = sync.ws_client(task.workspace).list_tasks(task.workspace.ls_project_id)
    assert any(t["id"] == task.ls_task_id and t.get("total_predictions") == 1 for t in shown)
    # the reader keeps the nodule (nudged), deletes cardiomegaly, adds an effusion
    _annotate_boxes = build_result([[102, 101, 201, 203], [20, 400, 120, 480]],
                                   ["Nodule/Mass", "Pleural effusion"],
                                   original_width=img.width, original_height=img.height)
    _reader_client(label_studio, reader).create_annotation(task.ls_task_id, _annotate_boxes)
    outcomes = sorted(pred.feedback.values_list("outcome", "label_class__name"))
    assert outcomes == [("accepted", "Nodule/Mass"), ("missed", "Pleural effusion"),
                        ("rejected", "Cardiomegaly")]
    # the radiologist rates it; the admin sees rates and the rating
    rc = APIClient()
    rc.force_authenticate(reader.user)
    assert rc.post(f"/api/predictions/{pred.pk}/rating/", {"useful": True, "comment": "good"},
                   format="json").status_code == 200
    ac = APIClient()
    ac.force_authenticate(admin_user)
    body = ac.get("/api/projects/test/feedback/").json()
    nodule = next(r for r in body["implicit"] if r["class_name"] == "Nodule/Mass")
    assert nodule["acceptance_rate"] == 1.0 and nodule["model_version"] == "m-test"
    assert body["ratings"][0]["comment"] == "good"
    assert rc.get("/api/projects/test/feedback/").status_code == 403


def test_adjudication_through_the_adjudicators_workspace(platform, label_studio):
    from annotations.models import Adjudication
    from annotations.services.consensus import consensus_run_create, consensus_run_execute

    project, rs, images = platform
    img = images[1]
    for r, (box, label) in zip(rs, [([10, 10, 80, 90], "Nodule/Mass"),
                                    ([300, 200, 450, 380], "Pleural effusion"),
                                    ([150, 20, 200, 70], "Nodule/Mass")], strict=True):
        _annotate(label_studio, r, img, box, label)
    consensus_run_execute(run_id=consensus_run_create(project=project, strategy="majority",
                                                      enqueue=False).pk)
    adj = Adjudication.objects.get(image=img)
    judge = readers.reader_create(email="judge@example.org", code="ADJ")
    assert sync.adjudications_push(project) == 0  # nobody adjudicates this project yet
    project_adjudicator_add(project=project, reader=judge)
    assert sync.adjudications_push(project) == 1
    ws = judge.workspaces.get(kind="adjudication")
    task = ws.tasks.get()
    assert task.adjudication == adj
    # every reader's read and the consensus are there as pre-labels
    preds = sync.ws_client(ws)._raw("GET", "/api/predictions/",
                                       params={"task": str(task.ls_task_id)})
    assert sorted(p["model_version"] for p in preds) == [
        "consensus", "reader-R1", "reader-R2", "reader-R3"]
    # the adjudicator decides in Label Studio; the decision overrides the consensus
    result = build_result([[300, 200, 450, 380]], ["Pleural effusion"],
                          original_width=img.width, original_height=img.height)
    reader_client(label_studio, judge, "adjudication").create_annotation(task.ls_task_id, result)
    adj.refresh_from_db()
    assert adj.status == "done" and adj.adjudicator == judge
    box = adj.decision.boxes.get()
    assert (box.label_class.name, box.x_min, box.y_max) == ("Pleural effusion",
                                                            pytest.approx(300),
                                                            pytest.approx(380))
    assert not ReaderAnnotation.objects.filter(reader=judge, source="label_studio").exists()


def test_workspace_deleted_behind_our_back_is_reported_and_the_others_repaired(
        platform, label_studio, settings):
    project, (r1, r2, r3), images = platform
    gone = r1.workspaces.get()
    deleted = requests.delete(f"{label_studio.url}/api/projects/{gone.ls_project_id}/",
                              headers={"Authorization": f"Token {gone.service_token}"},
                              timeout=30)
    assert deleted.status_code == 204
    settings.LABEL_STUDIO_WEBHOOK_SECRET = "rotated-" + "y" * 30  # webhooks now fail
    _annotate(label_studio, r2, images[0], [30, 40, 120, 150])
    _annotate(label_studio, r3, images[0], [32, 44, 118, 149])
    assert not ReaderAnnotation.objects.exists()  # both events refused at the door
    label_studio_reconcile_task()  # what Celery beat runs: one recorded pass
    run = ReconcileRun.objects.get()
    assert (run.status, run.trigger) == ("done", "schedule")
    assert [f["reader"] for f in run.failed_workspaces] == ["R1"]
    assert run.stats["created"] == 2
    assert sorted(a.reader.code for a in ReaderAnnotation.objects.filter(is_current=True)) == [
        "R2", "R3"]
