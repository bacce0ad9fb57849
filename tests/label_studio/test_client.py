"""LabelStudioClient against the session's real server, plus its error mapping."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from annotations.errors import DomainError
from annotations.label_studio import regions
from annotations.label_studio.client import LabelStudioClient, completed_by_id
from annotations.label_studio.config import label_config, split_taxonomy
from annotations.label_studio.server import free_port
from annotations.taxonomy import preset

TAXONOMY = preset("vindr_cxr")
CLASSES = split_taxonomy(TAXONOMY)
SIZE = {"original_width": 2048, "original_height": 1536}


@pytest.fixture(scope="module")
def project(ls_client):
    project_id = ls_client.create_project("client tests", label_config(TAXONOMY))
    task_ids = ls_client.import_tasks(project_id, [
        {"image": f"http://127.0.0.1:9/img/{i}.png", "case_id": f"c{i}"} for i in range(3)
    ])
    return project_id, task_ids


def _parse(result):
    return regions.parse_result(result, box_classes=CLASSES.box_classes,
                                image_classes=CLASSES.image_classes, **SIZE)


def test_health(ls_client):
    assert ls_client.health() == {"status": "UP"}


def test_import_and_list_tasks(ls_client, project):
    project_id, task_ids = project
    assert len(task_ids) == 3 and len(set(task_ids)) == 3
    tasks = ls_client.list_tasks(project_id)
    assert sorted(t["id"] for t in tasks) == sorted(task_ids)
    assert {t["data"]["case_id"] for t in tasks} == {"c0", "c1", "c2"}


def test_admin_annotation_round_trip_through_list_and_export(ls_client, project, label_studio):
    project_id, task_ids = project
    boxes = np.array([[100.5, 200.25, 612.0, 900.75], [1000, 10, 2048, 1536]])
    result = regions.build_result(boxes, ["Nodule/Mass", "ILD"], **SIZE)
    created = ls_client.create_annotation(task_ids[0], result)
    admin_id = ls_client.current_user()["id"]
    assert completed_by_id(created) == admin_id

    listed = ls_client.list_annotations(task_ids[0])
    assert [a["id"] for a in listed] == [created["id"]]
    assert listed[0]["updated_at"] and completed_by_id(listed[0]) == admin_id
    np.testing.assert_allclose(_parse(listed[0]["result"]).boxes, boxes, atol=1e-9)

    exported = {t["id"]: t for t in ls_client.export_project_annotations(project_id)}
    assert set(exported) == set(task_ids)  # unannotated tasks too
    (annotation,) = exported[task_ids[0]]["annotations"]
    assert completed_by_id(annotation) == admin_id and annotation["updated_at"]
    parsed = _parse(annotation["result"])
    assert parsed.labels == ["Nodule/Mass", "ILD"]
    np.testing.assert_allclose(parsed.boxes, boxes, atol=1e-9)


def test_prediction_and_update(ls_client, project):
    _, task_ids = project
    result = regions.build_result([[10, 10, 50, 50]], ["Atelectasis"], scores=[0.8], **SIZE)
    assert ls_client.create_prediction(task_ids[1], result, 0.8, "model-v1") > 0
    created = ls_client.create_annotation(task_ids[1], [regions.choices_region(["No finding"])])
    ls_client.update_annotation(created["id"], result)
    (annotation,) = ls_client.list_annotations(task_ids[1])
    assert _parse(annotation["result"]).labels == ["Atelectasis"]


def test_bridge_provisions_one_organization_per_workspace(ls_client, project, label_studio):
    _, admin_task_ids = project
    began = time.monotonic()
    first = ls_client.provision_workspace("9:1:reading", label_studio.bridge_secret)
    assert time.monotonic() - began < 10
    assert "token" not in repr(first) and first.service_token not in repr(first)
    # idempotent by key: a platform that failed half-way gets the same accounts back
    assert ls_client.provision_workspace("9:1:reading", label_studio.bridge_secret) == first
    second = ls_client.provision_workspace("9:2:reading", label_studio.bridge_secret)
    assert second.organization_id != first.organization_id

    service = LabelStudioClient(label_studio.url, first.service_token)
    assert service.current_user()["id"] == first.service_user_id
    pid = service.create_project("Workspace one", label_config(TAXONOMY))
    (tid,) = service.import_tasks(pid, [{"image": "http://127.0.0.1:9/x.png"}])
    result = regions.build_result([[5, 5, 300, 300]], ["Cardiomegaly"], **SIZE)
    # nobody, not even the workspace's own service user, annotates in someone else's name
    with pytest.raises(DomainError):
        service.create_annotation(tid, result, completed_by=first.reader_user_id)
    on_behalf = service.create_annotation(tid, result)
    assert completed_by_id(on_behalf) == first.service_user_id
    # the other workspace's service user, and the admin, see none of it
    other = LabelStudioClient(label_studio.url, second.service_token)
    for outsider in (other, ls_client):
        with pytest.raises(DomainError):
            outsider.get_project(pid)
        assert outsider.get_annotation(on_behalf["id"]) is None
    with pytest.raises(DomainError):  # nor can the workspace see the admin's project
        service.list_annotations(admin_task_ids[0])

    with pytest.raises(DomainError) as err:
        ls_client.provision_workspace("9:3:reading", "not-the-bridge-secret-" + "x" * 20)
    assert err.value.code == "label_studio_error" and err.value.detail["status"] == 403


class _Receiver(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((dict(self.headers), json.loads(body)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_webhook_is_created_and_delivered(ls_client, project):
    project_id, task_ids = project
    receiver = ThreadingHTTPServer(("127.0.0.1", free_port()), _Receiver)
    thread = threading.Thread(target=receiver.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{receiver.server_port}/hook"
        hook_id = ls_client.create_webhook(project_id, url, {"X-Cxr-Secret": "s3cret"},
                                           ["ANNOTATION_CREATED"])
        assert hook_id in {w["id"] for w in ls_client.list_webhooks(project_id)}
        created = ls_client.create_annotation(
            task_ids[0], [regions.choices_region(["No finding"])])
        deadline = time.monotonic() + 5
        while not _Receiver.received and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        receiver.shutdown()
        receiver.server_close()
    headers, payload = _Receiver.received[0]
    assert headers["X-Cxr-Secret"] == "s3cret"
    assert payload["action"] == "ANNOTATION_CREATED"
    assert payload["annotation"]["id"] == created["id"]
    assert _parse(payload["annotation"]["result"]).image_labels == {"No finding"}


def test_unreachable_server_is_transient_and_fast():
    client = LabelStudioClient(f"http://127.0.0.1:{free_port()}", "secret-token-value",
                               timeout=2, retries=2, backoff=0.05)
    for call in (client.health, lambda: client.create_project("abc", "<View/>"),
                 lambda: client.list_tasks(1),
                 lambda: client.provision_workspace("1:1:reading", "x" * 40)):
        began = time.monotonic()
        with pytest.raises(DomainError) as err:
            call()
        assert time.monotonic() - began < 2  # refused connections: retries, no timeouts
        assert err.value.code == "label_studio_unavailable" and err.value.transient
        assert err.value.status == 503
        assert "secret-token-value" not in str(err.value) + repr(err.value.detail)
    assert "secret-token-value" not in repr(client)


def test_refusals_are_not_transient(label_studio, ls_client):
    with pytest.raises(DomainError) as err:
        ls_client.list_annotations(10**8)
    assert err.value.code == "label_studio_error" and err.value.detail["status"] == 404
    assert not err.value.transient
    wrong = LabelStudioClient(label_studio.url, "not-the-token")
    with pytest.raises(DomainError) as err:
        wrong.list_tasks(1)
    assert err.value.detail["status"] == 401


def test_retry_policy_only_replays_unsent_creates(monkeypatch):
    """A POST that may have reached Label Studio is not replayed (no duplicate rows)."""
    import httpx

    client = LabelStudioClient("http://127.0.0.1:9", "t" * 20, retries=3, backoff=0)
    calls = []

    def flaky(exc):
        def fn():
            calls.append(exc)
            raise exc
        return fn

    for exc, idempotent, expected in [
        (httpx.ConnectError("refused"), False, 4),
        (httpx.ReadTimeout("slow"), False, 1),
        (httpx.ReadTimeout("slow"), True, 4),
    ]:
        calls.clear()
        with pytest.raises(DomainError) as err:
            client._call("probe", flaky(exc), idempotent=idempotent)
        assert len(calls) == expected and err.value.transient


def test_update_project(ls_client):
    project_id = ls_client.create_project("to rename", label_config(TAXONOMY),
                                          show_collab_predictions=True)
    ls_client.update_project(project_id, title="renamed", show_collab_predictions=False)
    project = ls_client.get_project(project_id)
    assert project["title"] == "renamed" and project["show_collab_predictions"] is False
