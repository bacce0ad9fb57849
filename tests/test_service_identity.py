"""The ML backend's service identity: a token that files training requests and can
do nothing else, against the real API (and, end to end, the real ML backend)."""

from __future__ import annotations

import re
from datetime import timedelta
from io import StringIO

import pytest
import requests
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.urls import resolve
from django.utils import timezone
from rest_framework.test import APIClient

from annotations.api import urls as api_urls
from annotations.errors import DomainError
from annotations.models import ServiceToken, TrainingRequest, Workspace
from annotations.services import readers
from annotations.services.service_accounts import ML_BACKEND, service_token_rotate

pytestmark = pytest.mark.django_db
TRAINING = "/api/ml/training-requests/"
#: The one other endpoint the token may call (GET only): which model serves an LS project.
MODEL = "/api/ml/projects/{}/model/"
#: ... and (GET only) a registered version's files, for a backend on another host.
FILES = "/api/ml/model-versions/1/files/1"


@pytest.fixture
def ls_project(project) -> int:
    """A platform project behind Label Studio project 77 that allows LS to start training."""
    reader = readers.reader_create(email="ws@example.org", code="R7")
    Workspace.objects.create(project=project, reader=reader, ls_project_id=77,
                             ls_organization_id=77, ls_reader_user_id=77,
                             ls_service_user_id=77, service_token="x")
    project.allow_label_studio_training = True
    project.save()
    return 77


def _client(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Service {key}")
    return client


def _every_api_route() -> list[str]:
    """Each API URL with its parameters filled (the 403 comes before any lookup)."""
    routes = [f"/api/{re.sub(r'<[^>]+>', '1', str(p.pattern))}" for p in api_urls.urlpatterns]
    return [*routes, "/api/schema/", "/api/docs/"]


def test_ml_backend_token_is_403_on_admin_endpoints(ls_project):
    client = _client(service_token_rotate(service=ML_BACKEND))
    resp = client.get("/api/projects/")
    assert resp.status_code == 403
    assert resp.json()["error"]["message"] == "the ml-backend service may not call this endpoint"
    assert client.get("/api/me/").status_code == 403  # IsAuthenticated alone is not enough


def _authenticates(url: str) -> bool:
    """False for views that take no credentials at all (sign-in, the LS webhook)."""
    view = resolve(url).func
    return getattr(view, "cls", None) is None or view.cls.authentication_classes != []


@pytest.mark.parametrize("method", ["get", "post", "patch", "delete"])
def test_ml_backend_token_is_refused_on_every_other_endpoint(ls_project, method):
    client = _client(service_token_rotate(service=ML_BACKEND))
    checked = 0
    for url in _every_api_route():
        if url in (TRAINING, MODEL.format(1), FILES):
            continue
        status = getattr(client, method)(url, {}, format="json").status_code
        if _authenticates(url):
            assert status == 403, f"{method.upper()} {url} answered {status} to the token"
            checked += 1
        else:  # the token is ignored there: it gets what anonymous gets
            anonymous = getattr(APIClient(), method)(url, {}, format="json").status_code
            assert status == anonymous, f"{method.upper()} {url}: {status} != {anonymous}"
    assert checked > 40


def test_ml_backend_token_reads_which_model_serves_a_project_and_writes_nothing(ls_project,
                                                                                project):
    from annotations.models import ModelVersion
    from annotations.services.model_registry import version_promote

    client = _client(service_token_rotate(service=ML_BACKEND))
    assert client.get(MODEL.format(ls_project)).status_code == 404  # nothing promoted yet
    version = ModelVersion.objects.create(project=project, name="test-v1", sha256="a" * 64,
                                          config="")
    version_promote(version=version)
    resp = client.get(MODEL.format(ls_project))
    assert resp.status_code == 200, resp.content
    assert resp.json() == {"ls_project_id": ls_project, "project": "test",
                           "model_version": "test-v1", "sha256": "a" * 64, "two_stage": None,
                           "masks": None}
    # the project's two-stage gate goes with it once switched on with a classifier
    classifier = ModelVersion.objects.create(project=project, name="test-c1", kind="classifier",
                                             sha256="b" * 64, config="")
    version_promote(version=classifier)
    assert client.get(MODEL.format(ls_project)).json()["two_stage"] is None  # switch off
    project.two_stage, project.two_stage_threshold = True, 0.8
    project.save()
    assert client.get(MODEL.format(ls_project)).json()["two_stage"] == {
        "classifier": "test-c1", "sha256": "b" * 64, "threshold": 0.8, "rescale": False}
    assert client.get(MODEL.format(ls_project)).json()["model_version"] == "test-v1"
    # a promoted mask model is named beside the detector, and serves alone without one
    segmenter = ModelVersion.objects.create(project=project, name="test-s1", kind="segmenter",
                                            sha256="c" * 64, config="")
    version_promote(version=segmenter)
    assert client.get(MODEL.format(ls_project)).json()["masks"] == {
        "segmenter": "test-s1", "sha256": "c" * 64}
    ModelVersion.objects.filter(kind="detector").update(promoted=False)
    alone = client.get(MODEL.format(ls_project)).json()
    assert alone["model_version"] is None and alone["two_stage"] is None
    assert alone["masks"]["segmenter"] == "test-s1"
    version_promote(version=version)
    assert client.get(MODEL.format(ls_project + 1)).status_code == 404  # no such workspace
    assert client.get(MODEL.format(10 ** 30)).status_code == 404  # out of the id range
    for method in ("post", "put", "patch", "delete"):
        assert getattr(client, method)(MODEL.format(ls_project), {},
                                       format="json").status_code == 405
    assert ModelVersion.objects.get(name="test-v1").promoted  # unchanged
    assert APIClient().get(MODEL.format(ls_project)).status_code in (401, 403)


def test_ml_backend_token_files_a_training_request(ls_project):
    resp = _client(service_token_rotate(service=ML_BACKEND)).post(
        TRAINING, {"ls_project_id": ls_project}, format="json")
    assert resp.status_code == 202, resp.content
    req = TrainingRequest.objects.get()
    assert req.requested_by.username == "service.ml-backend"


def test_service_account_is_no_admin_and_cannot_sign_in(ls_project):
    service_token_rotate(service=ML_BACKEND)
    user = get_user_model().objects.get(username="service.ml-backend")
    assert not user.is_staff and not user.is_superuser and not user.has_usable_password()
    assert list(user.groups.values_list("name", flat=True)) == ["ml-backend"]
    resp = APIClient().post("/api/auth/token/", {"username": user.username, "password": ""},
                            format="json")
    assert resp.status_code in (400, 401)


def test_rotation_revokes_the_old_token(ls_project):
    old = service_token_rotate(service=ML_BACKEND)
    new = service_token_rotate(service=ML_BACKEND)
    assert _client(old).post(TRAINING, {"ls_project_id": ls_project},
                             format="json").status_code == 401
    assert _client(new).post(TRAINING, {"ls_project_id": ls_project},
                             format="json").status_code == 202


def test_expired_service_token_is_refused(ls_project):
    key = service_token_rotate(service=ML_BACKEND, ttl_days=1)
    ServiceToken.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    resp = _client(key).post(TRAINING, {"ls_project_id": ls_project}, format="json")
    assert resp.status_code == 401 and "expired" in resp.json()["error"]["message"]
    assert not TrainingRequest.objects.exists()


def test_forged_service_token_is_refused(ls_project):
    service_token_rotate(service=ML_BACKEND)
    resp = _client("not-the-token").post(TRAINING, {"ls_project_id": ls_project},
                                         format="json")
    assert resp.status_code == 401


def test_only_the_hash_of_the_token_is_stored(db):
    key = service_token_rotate(service=ML_BACKEND)
    stored = ServiceToken.objects.get()
    assert key not in stored.key_hash and len(stored.key_hash) == 64
    assert key not in repr(stored)


def test_rotation_cannot_take_over_a_person_account(db):
    get_user_model().objects.create_user(username="service.ml-backend", password="p" * 12,
                                         is_staff=True)
    with pytest.raises(DomainError) as err:
        service_token_rotate(service=ML_BACKEND)
    assert err.value.code == "conflict"
    assert not ServiceToken.objects.exists()


def test_command_prints_only_the_token(ls_project):
    out, err = StringIO(), StringIO()
    call_command("ml_backend_token", stdout=out, stderr=err)
    key = out.getvalue().strip()
    assert "\n" not in key and "revoked" in err.getvalue()
    assert _client(key).post(TRAINING, {"ls_project_id": ls_project},
                             format="json").status_code == 202


@pytest.mark.django_db(transaction=True)
def test_real_ml_backend_with_the_service_token_starts_training(ls_project, live_server,
                                                                  tmp_path):
    from tests.ml_backend.servers import PASSWORD, USER, backend, serve_wsgi

    app = backend(tmp_path, platform_url=live_server.url,
                  platform_token=service_token_rotate(service=ML_BACKEND))
    with serve_wsgi(app) as url:
        resp = requests.post(f"{url}/webhook", auth=(USER, PASSWORD), timeout=30,
                             json={"action": "START_TRAINING", "project": {"id": ls_project}})
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "accepted"
    assert TrainingRequest.objects.get().requested_by.username == "service.ml-backend"
