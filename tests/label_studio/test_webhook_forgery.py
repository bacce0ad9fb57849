"""Forged, crossed and replayed webhooks against a real Label Studio: each changes nothing
and is kept as rejected with its reason.

A reader can read their own workspace's webhook secret in Label Studio (members see webhook
headers), so the secret alone must never make an event a fact: the platform re-reads every
annotation from Label Studio with the workspace's service credentials.
"""

from __future__ import annotations

import json

import pytest
import requests

from annotations.label_studio.regions import build_result
from annotations.models import Image, ReaderAnnotation, WebhookEvent
from annotations.services import label_studio_sync as sync
from annotations.services import readers
from tests.conftest import ingest_paths, write_png
from tests.label_studio.readers_ls import reader_client

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def two_readers(label_studio, ls_settings, project, tmp_path, live_server):
    project.readers_per_image = 2
    project.save()
    ingest_paths(project, [write_png(tmp_path / "in" / "a.png", seed=5, size=(600, 500))])
    a, b = (readers.reader_create(email=f"r{i}@example.org", code=f"R{i}") for i in (1, 2))
    readers.assignments_create(project=project)
    sync.assignments_push(project)
    image = Image.objects.get()
    result = build_result([[100, 120, 200, 260]], ["Nodule/Mass"], original_width=image.width,
                          original_height=image.height)
    a_ws = a.workspaces.get()
    a_task = a_ws.tasks.get()
    ann = reader_client(label_studio, a).create_annotation(a_task.ls_task_id, result)
    event = WebhookEvent.objects.get(action="ANNOTATION_CREATED", workspace=a_ws)
    return {"a": a, "b": b, "a_ws": a_ws, "b_ws": b.workspaces.get(), "a_task": a_task,
            "ann": ann, "event": event, "image": image, "url": live_server.url}


def _post(world, ws, payload, secret=None) -> requests.Response:
    from django.conf import settings

    headers = {settings.LABEL_STUDIO_WEBHOOK_HEADER: secret or sync.webhook_secret(ws),
               "Content-Type": "application/json"}
    return requests.post(f"{world['url']}/api/label-studio/webhook/{ws.pk}/",
                         data=json.dumps(payload).encode(), headers=headers, timeout=10)


def _a_read(world):
    read = ReaderAnnotation.objects.get(reader=world["a"], is_current=True)
    return read.pk, read.version, [(b.x_min, b.y_min) for b in read.boxes.all()]


def test_own_secret_with_another_readers_task_is_rejected(two_readers):
    w, before = two_readers, _a_read(two_readers)
    forged = dict(w["event"].payload)  # A's annotation, sent on B's URL with B's secret
    forged["annotation"] = dict(forged["annotation"], completed_by=w["b_ws"].ls_reader_user_id)
    assert _post(w, w["b_ws"], forged).status_code == 200  # acknowledged, then judged
    event = WebhookEvent.objects.filter(workspace=w["b_ws"]).get()
    assert event.status == "rejected" and "has no annotation" in event.reason
    assert _a_read(w) == before
    assert not ReaderAnnotation.objects.filter(reader=w["b"]).exists()


def test_own_secret_on_another_workspaces_url_is_refused_at_the_door(two_readers):
    w, before = two_readers, _a_read(two_readers)
    body = dict(w["event"].payload, note="crossed")
    r = _post(w, w["a_ws"], body, secret=sync.webhook_secret(w["b_ws"]))
    assert r.status_code == 403 and sync.webhook_secret(w["b_ws"]) not in r.text
    refused = WebhookEvent.objects.get(action="(refused)")
    assert refused.status == "rejected" and refused.payload == {}
    assert f"workspace {w['a_ws'].pk}" in refused.reason
    assert _a_read(w) == before


def test_valid_secret_with_rewritten_completed_by_is_rejected(two_readers):
    w, before = two_readers, _a_read(two_readers)
    forged = dict(w["event"].payload)
    forged["annotation"] = dict(forged["annotation"],
                                completed_by=w["a_ws"].ls_service_user_id)
    assert _post(w, w["a_ws"], forged).status_code == 200
    event = WebhookEvent.objects.exclude(pk=w["event"].pk).get()
    assert event.status == "rejected" and "another annotator" in event.reason
    assert _a_read(w) == before


def test_forged_result_under_a_real_annotation_id_is_rejected(two_readers):
    w, before = two_readers, _a_read(two_readers)
    forged = json.loads(json.dumps(w["event"].payload))
    forged["annotation"]["result"][0]["value"]["x"] = 1.0  # move A's box
    assert _post(w, w["a_ws"], forged).status_code == 200
    event = WebhookEvent.objects.exclude(pk=w["event"].pk).get()
    assert event.status == "rejected" and event.reason.startswith("stale_webhook")
    assert _a_read(w) == before


def test_replayed_older_annotation_is_rejected(two_readers, label_studio):
    w = two_readers
    newer = build_result([[300, 200, 450, 380]], ["Pleural effusion"],
                         original_width=w["image"].width, original_height=w["image"].height)
    reader_client(label_studio, w["a"]).update_annotation(int(w["ann"]["id"]), newer)
    current = _a_read(w)
    assert current[1] == 2  # the update arrived as version 2
    replay = dict(w["event"].payload, replayed=True)  # the first version, other bytes
    assert _post(w, w["a_ws"], replay).status_code == 200
    event = WebhookEvent.objects.filter(payload__replayed=True).get()
    assert event.status == "rejected" and event.reason.startswith("stale_webhook")
    assert _a_read(w) == current
    # an identical replay is stored once (digest), and still changes nothing
    again = requests.post(f"{w['url']}/api/label-studio/webhook/{w['a_ws'].pk}/",
                          data=json.dumps(replay).encode(), timeout=10, headers={
                              "X-CXR-Webhook-Secret": sync.webhook_secret(w["a_ws"]),
                              "Content-Type": "application/json"})
    assert again.json()["duplicate"] is True and _a_read(w) == current


def test_forged_deletion_of_an_existing_annotation_is_rejected(two_readers):
    w, before = two_readers, _a_read(two_readers)
    payload = {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": w["ann"]["id"]}]}
    assert _post(w, w["a_ws"], payload).status_code == 200
    event = WebhookEvent.objects.get(action="ANNOTATIONS_DELETED")
    assert event.status == "rejected" and "still exists" in event.reason
    assert _a_read(w) == before


def test_event_for_an_annotation_label_studio_does_not_have_is_rejected(two_readers):
    w = two_readers
    forged = dict(w["event"].payload)
    forged["annotation"] = dict(forged["annotation"], id=987654)
    assert _post(w, w["b_ws"], forged).status_code == 200
    event = WebhookEvent.objects.filter(workspace=w["b_ws"]).get()
    assert event.status == "rejected" and "has no annotation" in event.reason
    assert not ReaderAnnotation.objects.filter(reader=w["b"]).exists()
