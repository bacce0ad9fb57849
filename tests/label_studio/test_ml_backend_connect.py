"""A real Label Studio connects to our ML backend, asks it for predictions and
stores them; its "Start training" button reaches the platform, which accepts it
only for projects that allow it."""

from __future__ import annotations

import cv2
import pytest
from label_studio_sdk import LabelStudio

from annotations.label_studio.regions import percent_to_box
from annotations.models import AuditEvent, Image, TrainingRequest
from annotations.services import ingest, readers
from annotations.services import label_studio_sync as sync
from annotations.services.service_accounts import ML_BACKEND, service_token_rotate
from annotations.tasks import ingest_file
from tests.ml_backend.servers import (
    PASSWORD,
    PLATFORM,
    USER,
    backend,
    model_dir_with,
    register_promoted,
    serve_wsgi,
)
from tests.training.films import TRUTH, film, iou

pytestmark = pytest.mark.django_db(transaction=True)


def test_label_studio_gets_our_predictions(label_studio, live_server, ls_settings, project,
                                           trained_version, admin_user, tmp_path):
    cv2.imwrite(str(tmp_path / "film.png"), film(0))
    batch = ingest.ingest_batch_create(project=project, inputs=[tmp_path / "film.png"])
    ingest_file.delay(item_id=batch.items.get().id)
    project.readers_per_image = 1
    project.save()
    reader = readers.reader_create(email="ml@example.org", code="R5")
    readers.assignments_create(project=project)
    sync.assignments_push(project)
    task = reader.workspaces.get().tasks.get()
    assert task.image == Image.objects.get()

    # the backend holds the scoped ml-backend service token, never an admin's; it serves
    # this Label Studio only and fetches images from the platform's signed-URL origin only;
    # it asks the platform which version serves the workspace's project (the registry's)
    register_promoted(project, "v1", trained_version.sha256)
    app = backend(model_dir_with(trained_version.directory, tmp_path), serves=PLATFORM,
                  platform_url=live_server.url, label_studio_url=label_studio.url,
                  image_origins=(live_server.url,),
                  platform_token=service_token_rotate(service=ML_BACKEND))
    # as the workspace's service user: only it (and its reader) can reach that workspace
    ls = LabelStudio(base_url=label_studio.url, api_key=task.workspace.service_token)
    with serve_wsgi(app) as url:
        ml = ls.ml.create(project=task.workspace.ls_project_id, url=url, title="CXR detector",
                          auth_method="BASIC_AUTH", basic_auth_user=USER,
                          basic_auth_pass=PASSWORD, is_interactive=False)
        ls.actions.create(id="retrieve_tasks_predictions", project=task.workspace.ls_project_id,
                          selected_items={"all": False, "included": [task.ls_task_id]})
        preds = sync.ws_client(task.workspace)._raw("GET", "/api/predictions/",
                                           params={"task": str(task.ls_task_id)})
        assert preds, "Label Studio stored no prediction from our backend"
        pred = preds[0]
        assert pred["model_version"] == "v1"
        boxes = [(r["value"]["rectanglelabels"][0], percent_to_box(r["value"], 128, 128),
                  r["score"]) for r in pred["result"]]
        label, box, _ = max(boxes, key=lambda b: b[2])
        assert label == "Pleural effusion" and iou(box, TRUTH) > 0.5

        # "Start training" in Label Studio: refused for a project that does not allow it
        try:
            ls.ml.train(id=ml.id)
        except Exception:  # noqa: BLE001, S110 - how Label Studio relays a refusal varies
            pass
        assert AuditEvent.objects.filter(action="training.request_refused").exists()
        assert not TrainingRequest.objects.exists()
        project.allow_label_studio_training = True
        project.save()
        ls.ml.train(id=ml.id)
        req = TrainingRequest.objects.get()
        assert req.project == project and req.source == "label_studio"


def test_prelabel_run_pushes_into_workspaces_when_switched_on(
        label_studio, ls_settings, project, trained_version, tmp_path):
    from annotations.services.prelabeling import prelabel_run_create, prelabel_run_execute

    ls_settings.MODEL_DIR = model_dir_with(trained_version.directory, tmp_path)
    register_promoted(project, "v1", trained_version.sha256)
    for i in range(2):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), film(7 + i))
    batch = ingest.ingest_batch_create(project=project,
                                       inputs=[tmp_path / "f0.png", tmp_path / "f1.png"])
    for item_id in batch.items.values_list("id", flat=True):
        ingest_file.delay(item_id=item_id)
    project.readers_per_image, project.show_prelabels = 1, True
    project.save()
    reader = readers.reader_create(email="pl@example.org", code="R6")
    readers.assignments_create(project=project)
    sync.assignments_push(project)  # no predictions yet: tasks without pre-labels
    run = prelabel_run_execute(run_id=prelabel_run_create(project=project, enqueue=False).pk)
    assert run.status == "done" and run.pushed == 2
    for task in reader.workspaces.get().tasks.all():
        assert task.prediction is not None
        preds = sync.ws_client(task.workspace)._raw("GET", "/api/predictions/",
                                           params={"task": str(task.ls_task_id)})
        assert [p["model_version"] for p in preds] == ["v1"]
    # a second run of the same version pushes nothing twice
    again = prelabel_run_execute(run_id=prelabel_run_create(project=project, enqueue=False).pk)
    assert again.pushed == 0
