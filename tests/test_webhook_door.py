"""The webhook door without Label Studio: wrong secrets are refused and kept, a flood of
them is refused without filling the table, and a good secret for one workspace opens no
other."""

from __future__ import annotations

import json

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from annotations.models import WebhookEvent, Workspace
from annotations.services import label_studio_sync as sync
from annotations.services import readers
from annotations.services import webhooks as hooks

pytestmark = pytest.mark.django_db


@pytest.fixture
def workspaces(project):
    out = []
    for i in (1, 2):
        reader = readers.reader_create(email=f"d{i}@example.org", code=f"D{i}")
        out.append(Workspace.objects.create(
            project=project, reader=reader, ls_project_id=100 + i, ls_organization_id=10 + i,
            ls_reader_user_id=200 + i, ls_service_user_id=300 + i, service_token=f"t{i}"))
    return out


def _post(ws_pk: int, secret: str, body: dict):
    return APIClient().post(f"/api/label-studio/webhook/{ws_pk}/", data=json.dumps(body),
                            content_type="application/json",
                            **{"HTTP_" + settings.LABEL_STUDIO_WEBHOOK_HEADER.upper()
                               .replace("-", "_"): secret})


def test_one_workspaces_secret_opens_no_other(workspaces):
    a, b = workspaces
    body = {"action": "ANNOTATION_CREATED", "annotation": {"id": 1, "task": 1}}
    assert _post(a.pk, sync.webhook_secret(b), body).status_code == 403
    assert _post(999, sync.webhook_secret(a), dict(body, other=True)).status_code == 403
    assert sync.webhook_secret(a) != sync.webhook_secret(b)
    refused = list(WebhookEvent.objects.all())
    assert [(e.status, e.payload, e.workspace_id) for e in refused] == [("rejected", {}, None)] * 2


def test_a_flood_of_wrong_secrets_is_refused_without_filling_the_table(workspaces,
                                                                       monkeypatch):
    monkeypatch.setattr(hooks, "MAX_REFUSED_PER_HOUR", 3)
    a, _ = workspaces
    codes = [_post(a.pk, f"guess-{i}", {"action": "X", "n": i}).status_code for i in range(6)]
    assert codes == [403] * 6
    assert WebhookEvent.objects.filter(action="(refused)").count() == 3


def test_poison_event_is_rejected_after_bounded_attempts(workspaces, monkeypatch,
                                                         django_capture_on_commit_callbacks):
    """An event whose processing keeps failing (here: its task never runs) is re-queued by
    the sweep a bounded number of times, then rejected with the reason."""
    from annotations import tasks

    sent: list[int] = []
    monkeypatch.setattr(tasks.webhook_event_process_task, "delay",
                        lambda event_id: sent.append(event_id))
    a, _ = workspaces
    event = WebhookEvent.objects.create(digest="d" * 64, action="ANNOTATION_CREATED",
                                        payload={}, workspace=a)
    for _ in range(5):
        with django_capture_on_commit_callbacks(execute=True):
            assert hooks.webhook_events_sweep(older_than_seconds=-1, max_attempts=3) in (0, 1)
    event.refresh_from_db()
    assert sent == [event.pk] * 3
    assert event.status == "rejected" and event.reason.startswith("poison")
    assert hooks.webhook_events_sweep(older_than_seconds=-1) == 0
