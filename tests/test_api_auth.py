"""Authorization matrix: every endpoint x (anonymous, radiologist, other radiologist, admin).

Radiologists see only their own assignments and the images assigned to them.
"""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from annotations.models import Image
from annotations.services import readers
from tests.conftest import ingest_paths

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(project, admin_user, png_images):
    batch = ingest_paths(project, png_images)
    r1 = readers.reader_create(email="r1@example.org", code="R1", password="reader-pass-1")
    r2 = readers.reader_create(email="r2@example.org", code="R2", password="reader-pass-2")
    images = list(Image.objects.order_by("id"))
    assert len(images) == 4
    project.readers_per_image = 1
    project.save()
    readers.assignments_create(project=project)
    mine = [a.image.pseudo_id for a in r1.assignments.all()]
    theirs = [a.image.pseudo_id for a in r2.assignments.all()]
    assert mine and theirs and not set(mine) & set(theirs)
    return {"admin": admin_user, "r1": r1.user, "r2": r2.user, "mine": mine,
            "theirs": theirs, "batch": batch}


def client_for(user) -> APIClient:
    c = APIClient()
    if user is not None:
        c.force_authenticate(user)
    return c


# (method, url template, expected status per role)
READ_MATRIX = [
    ("get", "/api/projects/", {"anon": 401, "r1": 200, "admin": 200}),
    ("get", "/api/projects/test/", {"anon": 401, "r1": 200, "admin": 200}),
    ("get", "/api/projects/test/images/", {"anon": 401, "r1": 200, "admin": 200}),
    ("get", "/api/projects/test/quarantine/", {"anon": 401, "r1": 403, "admin": 200}),
    ("get", "/api/readers/", {"anon": 401, "r1": 403, "admin": 200}),
    ("get", "/api/audit/", {"anon": 401, "r1": 403, "admin": 200}),
    ("get", "/api/me/", {"anon": 401, "r1": 200, "admin": 200}),
    ("get", "/api/me/assignments/", {"anon": 401, "r1": 200, "admin": 200}),
    ("get", "/api/ingest-batches/{batch}/", {"anon": 401, "r1": 403, "admin": 200}),
    ("get", "/api/ingest-batches/{batch}/items/", {"anon": 401, "r1": 403, "admin": 200}),
    ("get", "/api/schema/", {"anon": 401, "r1": 200, "admin": 200}),
    ("get", "/api/docs/", {"anon": 401, "r1": 200, "admin": 200}),
    ("post", "/api/projects/", {"anon": 401, "r1": 403, "admin": 201}),
    ("patch", "/api/projects/test/", {"anon": 401, "r1": 403, "admin": 200}),
    ("post", "/api/readers/", {"anon": 401, "r1": 403, "admin": 201}),
    ("post", "/api/projects/test/assignments/", {"anon": 401, "r1": 403, "admin": 201}),
    ("post", "/api/projects/test/uploads/", {"anon": 401, "r1": 403, "admin": 400}),
    ("get", "/api/projects/test/consensus-runs/", {"anon": 401, "r1": 403, "admin": 200}),
    ("post", "/api/projects/test/consensus-runs/", {"anon": 401, "r1": 403, "admin": 202}),
    ("get", "/api/projects/test/agreement/", {"anon": 401, "r1": 403, "admin": 200}),
    ("post", "/api/projects/test/imports/", {"anon": 401, "r1": 403, "admin": 400}),
    ("get", "/api/projects/test/exports/coco/", {"anon": 401, "r1": 403, "admin": 200}),
    ("get", "/api/projects/test/adjudications/", {"anon": 401, "r1": 403, "admin": 200}),
    ("get", "/api/projects/test/violations/", {"anon": 401, "r1": 403, "admin": 200}),
    ("post", "/api/label-studio/reconcile/", {"anon": 401, "r1": 403, "admin": 200}),
    ("get", "/api/me/workspaces/", {"anon": 401, "r1": 200, "admin": 200}),
    ("get", "/api/projects/test/training-runs/", {"anon": 401, "r1": 403, "admin": 200}),
    ("post", "/api/projects/test/training-runs/", {"anon": 401, "r1": 403, "admin": 202}),
    ("get", "/api/projects/test/model-versions/", {"anon": 401, "r1": 403, "admin": 200}),
    ("post", "/api/projects/test/model-versions/rollback/",
     {"anon": 401, "r1": 403, "admin": 409}),
    ("get", "/api/projects/test/al-rounds/", {"anon": 401, "r1": 403, "admin": 200}),
    ("post", "/api/projects/test/al-rounds/", {"anon": 401, "r1": 403, "admin": 404}),
    ("get", "/api/projects/test/feedback/", {"anon": 401, "r1": 403, "admin": 200}),
    ("get", "/api/al-rounds/999/", {"anon": 401, "r1": 403, "admin": 404}),
    # no model promoted in the test project: 404 for the admin, never a run for a reader
    ("post", "/api/projects/test/prelabel-runs/", {"anon": 401, "r1": 403, "admin": 404}),
    ("post", "/api/ml/training-requests/", {"anon": 401, "r1": 403, "admin": 400}),
    # the webhook authenticates by its workspace's secret, not by user: none given -> 403
    ("post", "/api/label-studio/webhook/1/", {"anon": 403, "r1": 403, "admin": 403}),
]

BODIES = {
    "/api/projects/": {"name": "Another", "taxonomy_preset": "nih"},
    "/api/projects/test/": {"show_prelabels": True},
    "/api/readers/": {"email": "r3@example.org", "code": "R3"},
    "/api/projects/test/consensus-runs/": {"strategy": "majority"},
    "/api/projects/test/training-runs/": {"params": {"preset": "tiny", "max_iter": 1}},
    "/api/projects/test/al-rounds/": {"strategy": "entropy", "budget": 2},
}


@pytest.mark.parametrize("method,url,expected", READ_MATRIX)
@pytest.mark.parametrize("role", ["anon", "r1", "admin"])
def test_endpoint_role_matrix(world, method, url, expected, role):
    user = None if role == "anon" else world[role]
    url = url.format(batch=world["batch"].pk)
    multipart = method == "post" and ("uploads" in url or "imports" in url)
    kwargs = {} if multipart else {"format": "json"}
    body = BODIES.get(url)
    resp = getattr(client_for(user), method)(url, body, **kwargs)
    assert resp.status_code == expected[role], resp.content[:300]
    if resp.status_code >= 400 and "json" in resp.get("Content-Type", ""):
        assert "error" in resp.json() and "code" in resp.json()["error"]


def _ids(resp) -> set[str]:
    return {row["pseudo_id"] for row in resp.json()["results"]}


def test_radiologist_sees_only_assigned_images(world):
    resp = client_for(world["r1"]).get("/api/projects/test/images/")
    assert _ids(resp) == set(world["mine"])
    resp = client_for(world["r2"]).get("/api/projects/test/images/")
    assert _ids(resp) == set(world["theirs"])
    assert _ids(client_for(world["admin"]).get("/api/projects/test/images/")) == set(
        world["mine"] + world["theirs"])


def test_radiologist_cannot_open_another_readers_image(world):
    other = world["theirs"][0]
    assert client_for(world["r1"]).get(f"/api/images/{other}/").status_code == 404
    assert client_for(world["r2"]).get(f"/api/images/{other}/").status_code == 200
    assert client_for(None).get(f"/api/images/{other}/").status_code == 401


def test_assignments_are_private(world):
    rows = client_for(world["r1"]).get("/api/me/assignments/").json()["results"]
    assert {r["reader"] for r in rows} == {"R1"}
    assert {r["image"] for r in rows} == set(world["mine"])


def test_radiologist_without_assignment_sees_no_project(world, django_user_model):
    r3 = readers.reader_create(email="r9@example.org", code="R9")
    assert client_for(r3.user).get("/api/projects/").json()["results"] == []
    assert client_for(r3.user).get("/api/projects/test/images/").status_code == 404


def test_user_without_role_is_refused(world, django_user_model):
    nobody = django_user_model.objects.create_user(username="nobody", password="x" * 12)
    assert client_for(nobody).get("/api/projects/").status_code == 403
    assert client_for(nobody).get("/api/me/").json()["role"] == "none"


def test_token_authentication(world):
    c = APIClient()
    resp = c.post("/api/auth/token/", {"username": "r1@example.org",
                                       "password": "reader-pass-1"}, format="json")
    assert resp.status_code == 200
    c.credentials(HTTP_AUTHORIZATION="Token " + resp.json()["token"])
    assert c.get("/api/me/").json()["reader_code"] == "R1"
    c.credentials(HTTP_AUTHORIZATION="Token wrong")
    assert c.get("/api/me/").status_code == 401


def test_domain_error_is_clean_json(world):
    resp = client_for(world["admin"]).post(
        "/api/projects/", {"name": "Test project", "slug": "test"}, format="json")
    assert resp.status_code == 409
    assert resp.json() == {"error": {"code": "conflict",
                                     "message": "project 'test' already exists"}}
