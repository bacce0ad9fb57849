"""A curious reader against a real Label Studio: every attempt to see or touch another
reader's work, or the adjudication workspace, or settings, is refused.

Reader B holds exactly what the platform gives B: a one-time sign-in link to B's own
workspace, which becomes a Label Studio browser session.  Each attempt is tried with that
session and with the API token Label Studio keeps for B's user (B cannot fetch it; the
test reads it from Label Studio's database to show it would open nothing more).  The same
attempts through the platform's API are refused as well.
"""

from __future__ import annotations

import pytest
import requests
from rest_framework.test import APIClient

from annotations.label_studio.regions import build_result
from annotations.label_studio.tickets import sign_in_url, ticket_mint
from annotations.models import Adjudication, Image, ReaderAnnotation
from annotations.services import label_studio_sync as sync
from annotations.services import readers
from annotations.services.adjudication import project_adjudicator_add
from annotations.services.consensus import consensus_run_create, consensus_run_execute
from tests.conftest import ingest_paths, write_png
from tests.label_studio.readers_ls import reader_client, sign_in, stored_token

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def world(label_studio, ls_settings, project, tmp_path):
    """Three readers read two images; image 1 goes to adjudication by ADJ (not a reader)."""
    files = [write_png(tmp_path / "in" / f"cxr{i}.png", seed=70 + i, size=(600, 500))
             for i in range(2)]
    ingest_paths(project, files)
    rs = [readers.reader_create(email=f"reader{i}@example.org", code=f"R{i}")
          for i in (1, 2, 3)]
    readers.assignments_create(project=project)
    sync.assignments_push(project)
    images = list(Image.objects.order_by("id"))
    for r, (box, label) in zip(rs, [([10, 10, 80, 90], "Nodule/Mass"),
                                    ([300, 200, 450, 380], "Pleural effusion"),
                                    ([150, 20, 200, 70], "Nodule/Mass")], strict=True):
        result = build_result([box], [label], original_width=images[1].width,
                              original_height=images[1].height)
        reader_client(label_studio, r).create_annotation(
            r.workspaces.get().tasks.get(image=images[1]).ls_task_id, result)
    a_result = build_result([[100, 120, 200, 260]], ["Nodule/Mass"],
                            original_width=images[0].width, original_height=images[0].height)
    a, b = rs[0], rs[1]
    a_task = a.workspaces.get().tasks.get(image=images[0])
    a_ann = reader_client(label_studio, a).create_annotation(a_task.ls_task_id, a_result)
    consensus_run_execute(run_id=consensus_run_create(project=project, strategy="majority",
                                                      enqueue=False).pk)
    judge = readers.reader_create(email="judge@example.org", code="ADJ")
    project_adjudicator_add(project=project, reader=judge)
    assert sync.adjudications_push(project) == 1
    b_ws = b.workspaces.get()
    session = sign_in(b_ws)
    # readers cannot fetch their API token; the token Label Studio keeps for them anyway is
    # tried too, to show it would open nothing more
    assert session.get(f"{label_studio.url}/api/current-user/token",
                       timeout=10).status_code == 403
    token = stored_token(label_studio, b_ws)
    return {
        "project": project, "images": images, "a": a, "b": b, "judge": judge,
        "a_ws": a.workspaces.get(), "b_ws": b_ws, "adj_ws": judge.workspaces.get(),
        "a_task": a_task, "a_ann": a_ann, "session": session, "token": token,
        "url": label_studio.url,
    }


def _as_b(world, credential: str, method: str, path: str, **kwargs) -> requests.Response:
    if credential == "session":
        s = world["session"]
        if method != "GET":
            kwargs.setdefault("headers", {})["X-CSRFToken"] = s.cookies.get("csrftoken", "")
            kwargs["headers"]["Referer"] = world["url"] + "/"
        return s.request(method, world["url"] + path, timeout=10, allow_redirects=False,
                         **kwargs)
    headers = {"Authorization": f"Token {world['token']}"}
    return requests.request(method, world["url"] + path, headers=headers, timeout=10,
                            allow_redirects=False, **kwargs)


def _refused(response: requests.Response) -> bool:
    return response.status_code in (401, 403, 404)


CREDENTIALS = ["session", "token"]


def test_reader_lists_projects_and_sees_only_their_own(world):
    for credential in CREDENTIALS:
        r = _as_b(world, credential, "GET", "/api/projects/")
        assert r.status_code == 200
        ids = {p["id"] for p in r.json()["results"]}
        assert ids == {world["b_ws"].ls_project_id}


def test_reader_opens_another_workspace_project(world):
    for credential in CREDENTIALS:
        for pid, path in ((world[t].ls_project_id, p) for t in ("a_ws", "adj_ws") for p in PATHS):
            path = path.format(pid=pid)
            r = _as_b(world, credential, "GET", path)
            assert _refused(r), (path, r.status_code, r.text[:200])


PATHS = ("/api/projects/{pid}/", "/projects/{pid}/data",
         "/api/projects/{pid}/export?exportType=JSON", "/api/projects/{pid}/tasks/",
         "/api/dm/views/?project={pid}", "/api/tasks/?project={pid}")


def test_reader_reads_another_readers_task_and_annotation(world):
    for credential in CREDENTIALS:
        tid, aid = world["a_task"].ls_task_id, world["a_ann"]["id"]
        for path in (f"/api/tasks/{tid}/", f"/api/tasks/{tid}/annotations/",
                     f"/api/annotations/{aid}/", f"/api/tasks/{tid}/drafts"):
            r = _as_b(world, credential, "GET", path)
            assert _refused(r), (path, r.status_code, r.text[:200])


def test_reader_reads_the_adjudication_predictions(world):
    for credential in CREDENTIALS:
        adj_task = world["adj_ws"].tasks.get().ls_task_id
        for path in (f"/api/predictions/?task={adj_task}", f"/api/tasks/{adj_task}/"):
            r = _as_b(world, credential, "GET", path)
            assert _refused(r) or r.json() in ([], {"results": []}), (path, r.text[:200])


def test_reader_reads_webhook_settings(world):
    for credential in CREDENTIALS:
        r = _as_b(world, credential, "GET", "/api/webhooks/")
        assert _refused(r)  # not even their own workspace's webhook
        for ws in (world["b_ws"], world["a_ws"], world["adj_ws"]):
            assert sync.webhook_secret(ws) not in r.text
            assert f"/webhook/{ws.pk}/" not in r.text
        other = sync.ws_client(world["a_ws"]).list_webhooks(world["a_ws"].ls_project_id)[0]["id"]
        assert _refused(_as_b(world, credential, "GET", f"/api/webhooks/{other}/"))


def test_reader_lists_users(world):
    for credential in CREDENTIALS:
        r = _as_b(world, credential, "GET", "/api/users/")
        assert r.status_code == 200
        seen = {u["id"] for u in r.json()}
        assert world["a_ws"].ls_reader_user_id not in seen
        assert world["adj_ws"].ls_reader_user_id not in seen
        assert "example.org" not in r.text  # no platform identity in Label Studio at all
        assert _refused(_as_b(world, credential, "GET",
                              f"/api/users/{world['a_ws'].ls_reader_user_id}/"))


def test_reader_switches_their_active_organization(world):
    for credential in CREDENTIALS:
        me = world["b_ws"].ls_reader_user_id
        r = _as_b(world, credential, "PATCH", f"/api/users/{me}/",
                  json={"active_organization": world["a_ws"].ls_organization_id})
        assert _refused(r), r.text[:300]
        assert _refused(_as_b(world, credential, "GET",
                              f"/api/projects/{world['a_ws'].ls_project_id}/"))
        whoami = _as_b(world, credential, "GET", "/api/current-user/whoami").json()
        assert whoami["active_organization"] == world["b_ws"].ls_organization_id


def test_reader_opens_other_organizations(world):
    for credential in CREDENTIALS:
        org = world["a_ws"].ls_organization_id
        for path in (f"/api/organizations/{org}", f"/api/organizations/{org}/memberships"):
            assert _refused(_as_b(world, credential, "GET", path)), path
        listed = _as_b(world, credential, "GET", "/api/organizations/")
        assert _refused(listed) or org not in {o["id"] for o in listed.json()}


def test_reader_writes_into_another_readers_task(world):
    for credential in CREDENTIALS:
        image = world["images"][0]
        before = ReaderAnnotation.objects.count()
        result = build_result([[5, 5, 50, 50]], ["Nodule/Mass"], original_width=image.width,
                              original_height=image.height)
        r = _as_b(world, credential, "POST",
                  f"/api/tasks/{world['a_task'].ls_task_id}/annotations/", json={"result": result})
        assert _refused(r), r.text[:300]
        r = _as_b(world, credential, "POST", "/api/predictions/",
                  json={"task": world["a_task"].ls_task_id, "result": result})
        assert _refused(r), r.text[:300]
        held = sync.ws_client(world["a_ws"]).list_annotations(world["a_task"].ls_task_id)
        assert [a["id"] for a in held] == [world["a_ann"]["id"]]
        assert ReaderAnnotation.objects.count() == before


def test_sign_in_link_is_single_use_and_cannot_be_forged(world, label_studio, settings):
    ws = world["b_ws"]
    url = sync.workspace_sign_in_url(workspace=ws, reader=world["b"])
    assert requests.get(url, allow_redirects=False, timeout=10).status_code == 302
    assert requests.get(url, allow_redirects=False, timeout=10).status_code == 403  # replay
    # B rewrites the ticket to name A's Label Studio user: the signature breaks
    body, mac = url.split("t=")[1].split(".")
    forged = ticket_mint(user_id=world["a_ws"].ls_reader_user_id,
                         project_id=world["a_ws"].ls_project_id, secret="guessed-" + "x" * 30,
                         ttl=60)
    assert requests.get(sign_in_url(label_studio.url, forged), allow_redirects=False,
                        timeout=10).status_code == 403
    expired = ticket_mint(user_id=ws.ls_reader_user_id, project_id=ws.ls_project_id,
                          secret=settings.LABEL_STUDIO_BRIDGE_SECRET, ttl=-5)
    assert requests.get(sign_in_url(label_studio.url, expired), allow_redirects=False,
                        timeout=10).status_code == 403
    # a ticket for B's user but A's project: B is not a member there
    crossed = ticket_mint(user_id=ws.ls_reader_user_id, project_id=world["a_ws"].ls_project_id,
                          secret=settings.LABEL_STUDIO_BRIDGE_SECRET, ttl=60)
    assert requests.get(sign_in_url(label_studio.url, crossed), allow_redirects=False,
                        timeout=10).status_code == 403
    # nobody signs up into Label Studio by themselves (it would join the first organization)
    s = requests.Session()
    s.get(f"{label_studio.url}/user/signup/", timeout=10)
    r = s.post(f"{label_studio.url}/user/signup/", timeout=10, allow_redirects=False,
               data={"email": "curious@example.org", "password": "curious-pass-123",
                     "csrfmiddlewaretoken": s.cookies.get("csrftoken", "")},
               headers={"Referer": f"{label_studio.url}/user/signup/"})
    assert r.status_code != 302
    assert s.get(f"{label_studio.url}/api/projects/", timeout=10).status_code == 401


def test_reader_has_no_password_login(world, label_studio):
    s = requests.Session()
    page = s.get(f"{label_studio.url}/user/login/", timeout=10)
    csrf = s.cookies.get("csrftoken", "")
    for email in ("reader2@example.org", ""):
        r = s.post(f"{label_studio.url}/user/login/", timeout=10, allow_redirects=False,
                   data={"email": email, "password": "anything-at-all-1",
                         "csrfmiddlewaretoken": csrf},
                   headers={"Referer": f"{label_studio.url}/user/login/"})
        assert r.status_code != 302 or "/user/login" in r.headers.get("Location", "")
    assert page.status_code == 200


def test_the_same_attempts_through_the_platform_are_refused(world):
    b = APIClient()
    b.force_authenticate(world["b"].user)
    project = world["project"]
    adj = Adjudication.objects.get()
    for path in (f"/api/me/workspaces/{world['a_ws'].pk}/open/",
                 f"/api/me/workspaces/{world['adj_ws'].pk}/open/",
                 f"/api/projects/{project.slug}/adjudications/",
                 f"/api/adjudications/{adj.pk}/",
                 f"/api/projects/{project.slug}/violations/",
                 f"/api/projects/{project.slug}/exports/coco/",
                 f"/api/projects/{project.slug}/agreement/",
                 f"/api/projects/{project.slug}/adjudicators/"):
        r = b.get(path)
        assert r.status_code in (403, 404), (path, r.status_code)
    assert b.post(f"/api/adjudications/{adj.pk}/decision/", {"boxes": []},
                  format="json").status_code in (403, 404)
    # B's own link works, and only for B
    own = b.get(f"/api/me/workspaces/{world['b_ws'].pk}/open/")
    assert own.status_code == 302 and "/cxr-bridge/sso/?t=" in own["Location"]
    # the image A read but B has not finished: no layer of A's shows to B
    image = world["images"][0]
    layers = b.get(f"/api/images/{image.pseudo_id}/layers/")
    assert layers.status_code in (200, 403, 404)
    if layers.status_code == 200:
        assert "R1" not in layers.content.decode()


def test_reader_smuggles_ids_past_the_scope_check(world):
    """Header spellings DRF accepts, ids as Django parses them, ids in bodies."""
    a_pid, a_tid = world["a_ws"].ls_project_id, world["a_task"].ls_task_id
    a_user = world["a_ws"].ls_reader_user_id
    lower = {"Authorization": f"token {world['token']}"}
    tab = {"Authorization": f"Token\t{world['token']}"}
    for headers in (lower, tab):
        for path in (f"/api/annotations/{world['a_ann']['id']}/", f"/api/tasks/{a_tid}/drafts",
                     f"/api/projects/{a_pid}/tasks/"):
            r = requests.get(world["url"] + path, headers=headers, timeout=10)
            assert _refused(r), (headers, path, r.status_code)
    view = requests.post(f"{world['url']}/api/dm/views/", json={"project": a_pid}, timeout=10,
                         headers={"Authorization": f"Token {world['a_ws'].service_token}"}
                         ).json()["id"]
    for body in ({"project": f" {a_pid}"}, {"project": float(a_pid)}, {"view": view}):
        for credential in CREDENTIALS:
            r = _as_b(world, credential, "GET", "/api/tasks/?fields=all&page_size=100",
                      json=body)
            assert _refused(r), (body, r.status_code, r.text[:200])
    # B edits B's own annotation to move it onto A's task, in A's name
    b_task = world["b_ws"].tasks.get(image=world["images"][0])
    image = world["images"][0]
    result = build_result([[5, 5, 50, 50]], ["Nodule/Mass"], original_width=image.width,
                          original_height=image.height)
    own = requests.post(f"{world['url']}/api/tasks/{b_task.ls_task_id}/annotations/",
                        json={"result": result}, timeout=10,
                        headers={"Authorization": f"Token {world['token']}"})
    assert own.status_code == 201, own.text[:200]
    for body in ({"task": f" {a_tid}"}, {"project": a_pid}, {"completed_by": a_user}):
        r = _as_b(world, "token", "PATCH", f"/api/annotations/{own.json()['id']}/", json=body)
        assert _refused(r), (body, r.status_code, r.text[:200])
    held = sync.ws_client(world["a_ws"]).list_annotations(a_tid)
    assert [a["id"] for a in held] == [world["a_ann"]["id"]]


def test_reader_reaches_settings_tokens_and_other_services(world):
    own_org, own_pid = world["b_ws"].ls_organization_id, world["b_ws"].ls_project_id
    attempts = [
        ("PATCH", f"/api/organizations/{own_org}",
         {"title": f"cxr:{world['project'].pk}:{world['judge'].pk}:adjudication"}),
        ("POST", "/api/ml/", {"project": own_pid, "url": "http://127.0.0.1:9/"}),
        ("POST", "/api/webhooks/", {"project": own_pid, "url": "http://127.0.0.1:9/"}),
        ("POST", "/api/predictions/", {"task": world["b_ws"].tasks.first().ls_task_id,
                                       "result": []}),
        ("POST", "/api/token/", {}), ("GET", "/api/token/", None),
        ("GET", "/api/invite", None), ("GET", f"/api/projects/{own_pid}/export?exportType=JSON",
                                        None),
        ("POST", f"/api/projects/{own_pid}/import", {"image": "x"}),
        ("PATCH", f"/api/projects/{own_pid}/", {"label_config": "<View/>"}),
        ("DELETE", f"/api/projects/{own_pid}/", None),
        ("POST", "/api/users/", {"email": "friend@example.org"}),
        ("GET", "/api/storages/", None),
        ("POST", "/api/dm/actions/?id=delete_tasks&project=" + str(own_pid),
         {"selectedItems": {"all": True}}),
    ]
    for credential in CREDENTIALS:
        for method, path, body in attempts:
            r = _as_b(world, credential, method, path,
                      **({} if body is None else {"json": body}))
            assert _refused(r), (credential, method, path, r.status_code, r.text[:200])
    # the rename did not happen, and a new workspace for that key is still its own
    assert sync.ws_client(world["b_ws"]).get_project(own_pid)["id"] == own_pid
    assert world["b_ws"].tasks.count() == len(world["images"])
