"""Per-project models are the only truth: the registry's promoted version per
project, on the platform (pre-labelling, Quick read) and in the ML backend, which
asks the platform per Label Studio project; no global marker file."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import pytest
import requests
from django.conf import settings
from django.db import transaction

from annotations.errors import DomainError
from annotations.models import ModelVersion, Prediction, Workspace
from annotations.selectors import model_version_promoted
from annotations.services import readers
from annotations.services.model_registry import version_promote
from annotations.services.prelabeling import prelabel_run_create, prelabel_run_execute
from annotations.services.projects import project_create
from annotations.services.service_accounts import ML_BACKEND, service_token_rotate
from tests.conftest import ingest_paths
from tests.ml_backend.servers import (
    PASSWORD,
    PLATFORM,
    USER,
    backend,
    model_dir_with,
    register_promoted,
    serve_files,
    serve_wsgi,
)
from tests.training.films import film


def _markers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if "promoted" in p.name]


def _films(project, root: Path, n: int, seed: int) -> None:
    paths = []
    for i in range(n):
        path = root / f"films-{project.slug}" / f"f{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), film(seed + i, lesion=i % 2 == 0))
        paths.append(path)
    ingest_paths(project, paths)


def _workspace(project, ls_id: int, code: str) -> None:
    reader = readers.reader_create(email=f"{code.lower()}@example.org", code=code)
    Workspace.objects.create(project=project, reader=reader, ls_project_id=ls_id,
                             ls_organization_id=ls_id, ls_reader_user_id=ls_id,
                             ls_service_user_id=ls_id, service_token="x")


@pytest.fixture
def two_projects(db, admin_user, tmp_path, settings, trained_version):
    """Projects A and B, each with its own promoted version (same weights, own names),
    and B's next version ready to promote; A behind LS project 11, B behind 22."""
    settings.MODEL_DIR = model_dir_with(trained_version.directory, tmp_path, "a-v1")
    for name in ("b-v1", "b-v2"):
        shutil.copytree(trained_version.directory, Path(settings.MODEL_DIR) / name)
    a = project_create(name="A", slug="a", actor=admin_user)
    b = project_create(name="B", slug="b", actor=admin_user)
    register_promoted(a, "a-v1", trained_version.sha256)
    register_promoted(b, "b-v1", trained_version.sha256)
    b_next = ModelVersion.objects.create(project=b, name="b-v2", sha256=trained_version.sha256,
                                         config="")
    _workspace(a, 11, "RA")
    _workspace(b, 22, "RB")
    return a, b, b_next


@pytest.mark.django_db
def test_promoting_b_while_a_prelabels_leaves_a_on_its_version(two_projects, tmp_path):
    a, b, b_next = two_projects
    _films(a, tmp_path, 3, seed=100)
    run = prelabel_run_create(project=a, enqueue=False)
    assert run.model_version == "a-v1"
    promoted_during = []

    def promote_b_after_first_batch(done: int, total: int) -> None:
        if done == 1:
            version_promote(version=b_next, reason="B retrained")
            promoted_during.append(done)

    run = prelabel_run_execute(run_id=run.pk, batch_size=1,
                               progress=promote_b_after_first_batch)
    assert run.status == "done" and promoted_during == [1]
    assert model_version_promoted(b).name == "b-v2"
    assert set(Prediction.objects.filter(image__project=a).values_list(
        "model_version", flat=True)) == {"a-v1"}
    # a run created after B's promotion still takes A's version, from the registry
    again = prelabel_run_create(project=a, enqueue=False)
    assert again.model_version == "a-v1"
    assert model_version_promoted(a).name == "a-v1"
    assert _markers(Path(settings.MODEL_DIR)) == []  # no file says what serves a project


@pytest.mark.django_db
def test_a_version_of_another_project_is_refused(two_projects):
    a, _, _ = two_projects
    with pytest.raises(DomainError) as err:
        prelabel_run_create(project=a, model_version="b-v1", enqueue=False)
    assert "another project" in err.value.message


@pytest.mark.django_db
def test_a_project_without_a_promoted_version_is_not_served_another_one(two_projects,
                                                                        admin_user):
    c = project_create(name="C", slug="c", actor=admin_user)
    with pytest.raises(DomainError) as err:
        prelabel_run_create(project=c, enqueue=False)
    assert err.value.code == "not_found"


@pytest.mark.django_db
def test_a_rolled_back_promotion_leaves_nothing_behind(two_projects):
    _, b, b_next = two_projects
    with pytest.raises(RuntimeError), transaction.atomic():
        version_promote(version=b_next, reason="about to fail")
        raise RuntimeError("the surrounding transaction fails")
    assert model_version_promoted(b).name == "b-v1"
    assert _markers(Path(settings.MODEL_DIR)) == []


def _predict(url: str, files: str, ls_project: int) -> str:
    resp = requests.post(f"{url}/predict", auth=(USER, PASSWORD), timeout=60, json={
        "project": f"{ls_project}.1795464641",
        "tasks": [{"id": 1, "data": {"image": f"{files}/lesion.png"}}]})
    assert resp.status_code == 200, resp.text
    return resp.json()["results"][0]["model_version"]


@pytest.mark.django_db(transaction=True)
def test_ml_backend_serves_each_label_studio_project_its_platform_projects_version(
        two_projects, live_server, tmp_path):
    _, _, b_next = two_projects
    (tmp_path / "img").mkdir()
    cv2.imwrite(str(tmp_path / "img" / "lesion.png"), film(0))
    with serve_files(tmp_path / "img") as files:
        app = backend(Path(settings.MODEL_DIR), serves=PLATFORM, platform_url=live_server.url,
                      platform_token=service_token_rotate(service=ML_BACKEND),
                      image_origins=(files,), project_cache_seconds=0)
        with serve_wsgi(app) as url:
            assert _predict(url, files, 11) == "a-v1"
            assert _predict(url, files, 22) == "b-v1"
            version_promote(version=b_next, reason="B retrained")
            assert _predict(url, files, 22) == "b-v2"
            assert _predict(url, files, 11) == "a-v1"
            unknown = requests.post(f"{url}/predict", auth=(USER, PASSWORD), timeout=60,
                                    json={"project": "33.1", "tasks": [
                                        {"id": 1, "data": {"image": f"{files}/lesion.png"}}]})
            assert unknown.status_code == 503
    assert app.store.loaded() == ["a-v1", "b-v2"]  # CXR_ML_MAX_LOADED_MODELS=2


@pytest.mark.django_db(transaction=True)
def test_an_ml_backend_on_another_host_fetches_its_versions_and_verifies_them(
        two_projects, live_server, tmp_path):
    """CXR_ML_FETCH_MODELS: the backend shares no folder with the platform; it fetches
    the version that serves a project through the platform (its service token only),
    and a file altered in the store is refused by the registry's digest."""
    (tmp_path / "img").mkdir()
    cv2.imwrite(str(tmp_path / "img" / "lesion.png"), film(0))
    own = tmp_path / "backend-host" / "models"
    tampered = Path(settings.MODEL_DIR) / "b-v1" / "model.pth"
    tampered.write_bytes(tampered.read_bytes()[:-16] + b"\0" * 16)
    with serve_files(tmp_path / "img") as files:
        app = backend(own, serves=PLATFORM, platform_url=live_server.url,
                      platform_token=service_token_rotate(service=ML_BACKEND),
                      image_origins=(files,), project_cache_seconds=0, fetch_models=True)
        with serve_wsgi(app) as url:
            assert _predict(url, files, 11) == "a-v1"
            altered = requests.post(f"{url}/predict", auth=(USER, PASSWORD), timeout=60,
                                    json={"project": "22.1", "tasks": [
                                        {"id": 1, "data": {"image": f"{files}/lesion.png"}}]})
            assert altered.status_code == 503, altered.text
    assert sorted(p.name for p in (own / "a-v1").iterdir()) == [
        "config.yaml", "manifest.sha256", "model.pth"]
    assert app.store.loaded() == ["a-v1"]


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "filename"), [
    ("a-v1", "secrets.txt"), ("a-v1", "..%2Fb-v1%2Fmodel.pth"), ("nope", "model.pth"),
    ("..", "model.pth")])
def test_the_model_file_endpoint_serves_registered_version_files_only(two_projects, client,
                                                                      name, filename):
    token = service_token_rotate(service=ML_BACKEND)
    auth = {"HTTP_AUTHORIZATION": f"Service {token}"}
    ok = client.get("/api/ml/model-versions/a-v1/files/model.pth", **auth)
    assert ok.status_code == 200 and b"".join(ok.streaming_content)
    assert client.get(f"/api/ml/model-versions/{name}/files/{filename}", **auth
                      ).status_code == 404
    # nobody else: not anonymous, not a radiologist signed in
    assert client.get("/api/ml/model-versions/a-v1/files/model.pth").status_code in (401, 403)
    reader = readers.reader_create(email="curious@example.org", code="R77")
    client.force_login(reader.user)
    assert client.get("/api/ml/model-versions/a-v1/files/model.pth").status_code == 403
