"""The ML backend answers Label Studio's recorded requests; bad requests get 4xx."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests

from annotations.label_studio.regions import parse_result, percent_to_box
from ml_backend.model_store import ProjectModel
from tests.ml_backend.servers import (
    PASSWORD,
    USER,
    backend,
    model_dir_with,
    serve_files,
    serve_wsgi,
)
from tests.training.films import TRUTH, film, iou

SAMPLES = Path(__file__).resolve().parents[1] / "label_studio" / "samples"
AUTH = (USER, PASSWORD)


def _sample(name: str) -> dict:
    return json.loads((SAMPLES / name).read_text())


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    cv2.imwrite(str(root / "lesion.png"), film(0))
    (root / "junk.png").write_bytes(b"not a png")
    with serve_files(root) as url:
        yield url


@pytest.fixture
def server(trained_version, tmp_path, files):
    app = backend(model_dir_with(trained_version.directory, tmp_path), image_origins=(files,))
    with serve_wsgi(app) as url:
        yield url, app


def _call(url: str, sample: dict, body=None, auth=AUTH):
    return requests.request(sample["method"], url + sample["path"], auth=auth, timeout=60,
                            json=body if body is not None else sample["body"])


def test_health_setup_versions_samples(server):
    url, _ = server
    health = _call(url, _sample("ml_health.json"), body=None)
    assert health.status_code == 200
    assert health.json() == {"status": "UP", "model_class": "CXRDetectron2",
                             "model_version": None, "loaded_versions": []}  # nothing used yet
    setup = _call(url, _sample("ml_setup.json"))
    assert setup.status_code == 200 and setup.json() == {"model_version": "v1"}
    versions = _call(url, _sample("ml_versions.json"), body=None)
    assert versions.json() == {"versions": ["v1"]}


@pytest.mark.parametrize("name", ["ml_predict.json", "ml_predict_interactive.json"])
def test_predict_samples_get_schema_valid_answers(server, files, name):
    url, _ = server
    body = copy.deepcopy(_sample(name)["body"])
    tasks = body["tasks"]
    tasks[0]["data"]["image"] = f"{files}/lesion.png"
    resp = requests.post(f"{url}/predict", json=body, auth=AUTH, timeout=60)
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    assert len(results) == len(tasks)
    first = results[0]
    assert first["model_version"] == "v1" and 0 < first["score"] <= 1
    parsed = parse_result(first["result"], box_classes=["Nodule/Mass", "Pleural effusion"])
    assert parsed.original_width == 128 and parsed.original_height == 128
    best = int(np.nanargmax(parsed.scores))
    assert parsed.labels[best] == "Pleural effusion"
    assert iou(parsed.boxes[best], TRUTH) > 0.5
    for item in first["result"]:
        assert set(item) >= {"from_name", "to_name", "type", "original_width",
                             "original_height", "image_rotation", "value", "score", "id"}
        v = item["value"]
        assert set(v) >= {"x", "y", "width", "height", "rotation", "rectanglelabels"}
        back = percent_to_box(v, 128, 128)
        assert (back >= 0).all() and (back <= 128).all()


def test_unreadable_images_give_empty_results_not_a_failed_batch(server, files):
    url, _ = server
    body = {"project": "1.2", "tasks": [{"id": 1, "data": {"image": f"{files}/lesion.png"}},
                                        {"id": 2, "data": {"image": f"{files}/missing.png"}},
                                        {"id": 3, "data": {"image": f"{files}/junk.png"}}]}
    resp = requests.post(f"{url}/predict", json=body, auth=AUTH, timeout=60)
    assert resp.status_code == 200
    results = resp.json()["results"]
    assert results[0]["result"] and results[1]["result"] == [] == results[2]["result"]


@pytest.mark.parametrize("path,body,status", [
    ("/predict", {"project": "1.2", "tasks": "nope"}, 400),
    ("/predict", {"project": "1.2", "tasks": [{"id": 1}]}, 400),
    ("/predict", {"project": "1.2", "tasks": [{"id": 1, "data": {"text": "x"}}]}, 400),
    ("/predict", {"tasks": []}, 400),  # which project's model? Label Studio always says
    ("/predict", {"project": "x.2", "tasks": []}, 400),
    ("/predict", {"project": True, "tasks": []}, 400),
    ("/setup", {"project": "1.2"}, 400),
    ("/setup", {"project": "1.2", "schema": "<View><Oops"}, 400),
    ("/webhook", {"no": "action"}, 400),
    ("/nowhere", {}, 404),
])
def test_malformed_requests_get_4xx_with_a_reason(server, path, body, status):
    url, _ = server
    resp = requests.post(url + path, json=body, auth=AUTH, timeout=30)
    assert resp.status_code == status and resp.json()["error"]


def test_body_that_is_not_json(server):
    url, _ = server
    resp = requests.post(f"{url}/predict", data=b"{nope", auth=AUTH, timeout=30,
                         headers={"Content-Type": "application/json"})
    assert resp.status_code == 400 and resp.json()["error"] == "the body is not JSON"


@pytest.mark.parametrize("auth", [None, ("label-studio", "wrong"), ("x", PASSWORD)])
def test_unauthenticated_calls_are_refused(server, auth):
    url, _ = server
    resp = requests.get(f"{url}/health", auth=auth, timeout=30)
    assert resp.status_code == 401
    bad = requests.get(f"{url}/health", timeout=30,
                       headers={"Authorization": "Basic " + base64.b64encode(b"??").decode()})
    assert bad.status_code == 401


def test_no_promoted_model_is_503(trained_version, tmp_path, files):
    models = model_dir_with(trained_version.directory, tmp_path)
    with serve_wsgi(backend(models, serves=None, image_origins=(files,))) as url:
        resp = requests.post(f"{url}/predict", auth=AUTH, timeout=30,
                             json={"project": "1.2",
                                   "tasks": [{"id": 1, "data": {"image": f"{files}/y.png"}}]})
        setup = _call(url, _sample("ml_setup.json"))
    assert resp.status_code == 503 and "Label Studio project 1" in resp.json()["error"]
    assert setup.json() == {"model_version": "none"}


def _predict_version(url: str, files: str, ls_project: int) -> str:
    resp = requests.post(f"{url}/predict", auth=AUTH, timeout=60, json={
        "project": f"{ls_project}.1795464641",
        "tasks": [{"id": 1, "data": {"image": f"{files}/lesion.png"}}]})
    assert resp.status_code == 200, resp.text
    return resp.json()["results"][0]["model_version"]


def test_each_label_studio_project_gets_its_own_version(trained_version, tmp_path, files):
    """Projects A (LS 11) and B (LS 22) each served their own version; promoting
    another in B changes nothing for A; at most two stay loaded, LRU evicted."""
    import shutil

    models = model_dir_with(trained_version.directory, tmp_path, "a-v1")
    for name in ("b-v1", "b-v2"):
        shutil.copytree(trained_version.directory, models / name)
    digest = trained_version.sha256
    serving = {11: ProjectModel("a", "a-v1", digest), 22: ProjectModel("b", "b-v1", digest)}
    app = backend(models, serves=serving.get, image_origins=(files,), max_loaded_models=2)
    with serve_wsgi(app) as url:
        assert _predict_version(url, files, 11) == "a-v1"
        assert _predict_version(url, files, 22) == "b-v1"
        assert app.store.loaded() == ["b-v1", "a-v1"]
        serving[22] = ProjectModel("b", "b-v2", digest)  # B promotes: A is untouched
        assert _predict_version(url, files, 22) == "b-v2"
        assert app.store.loaded() == ["b-v2", "b-v1"]  # a-v1 least recently used: out
        assert _predict_version(url, files, 11) == "a-v1"
        assert app.store.loaded() == ["a-v1", "b-v2"]
        health = requests.get(f"{url}/health", auth=AUTH, timeout=30).json()
        assert health["model_version"] == "a-v1"
        assert requests.get(f"{url}/versions", auth=AUTH, timeout=30).json() == {
            "versions": ["a-v1", "b-v1", "b-v2"]}
        setup = _call(url, {**_sample("ml_setup.json"),
                            "body": {**_sample("ml_setup.json")["body"], "project": "22.5"}})
        assert setup.json() == {"model_version": "b-v2"}


def test_files_that_do_not_match_the_registry_digest_are_refused(trained_version, tmp_path,
                                                                 files):
    models = model_dir_with(trained_version.directory, tmp_path)
    app = backend(models, serves=lambda _: ProjectModel("a", "v1", "0" * 64),
                  image_origins=(files,))
    with serve_wsgi(app) as url:
        resp = requests.post(f"{url}/predict", auth=AUTH, timeout=60, json={
            "project": "1.2", "tasks": [{"id": 1, "data": {"image": f"{files}/lesion.png"}}]})
    assert resp.status_code == 503 and "unavailable" in resp.json()["error"]
    assert app.store.loaded() == []


def test_project_answers_are_cached_briefly():
    from ml_backend.model_store import CachedResolver

    calls, now = [], [0.0]
    resolve = CachedResolver(lambda i: calls.append(i) or ProjectModel("a", "v1", None),
                             ttl=10, clock=lambda: now[0])
    assert resolve(1).version == resolve(1).version == "v1" and calls == [1]
    now[0] = 11
    resolve(1)
    assert calls == [1, 1]


@pytest.mark.parametrize("name", ["../etc", "a/b", ".hidden", "", "x" * 65])
def test_a_version_name_is_one_path_component(name):
    with pytest.raises(ValueError):
        ProjectModel("a", name, None)


@pytest.mark.parametrize("fields", [
    {"classifier": "../../etc/passwd"}, {"classifier": "c/../v1"}, {"classifier": ".c"},
    {"classifier": "c1", "classifier_sha256": "not-a-digest"},
    {"classifier": "c1", "threshold": 1.5}, {"classifier": "c1", "threshold": -0.1},
])
def test_a_gate_answer_that_names_a_path_or_a_bad_digest_is_refused(fields):
    """The gate's classifier is loaded from the models folder by the name the platform
    answers: a name that leaves the folder, a malformed digest or an operating point
    outside 0..1 is refused before anything is read."""
    with pytest.raises(ValueError):
        ProjectModel("a", "v1", None, **fields)


def test_start_training_goes_to_the_platform(server):
    url, _ = server
    # the platform (port 9: nothing listens) is unreachable: a clear 502, not a crash
    resp = _call(url, _sample("ml_train.json"))
    assert resp.status_code == 502 and "platform unreachable" in resp.json()["error"]
    other = requests.post(f"{url}/webhook", json={"action": "ANNOTATION_CREATED"}, auth=AUTH,
                          timeout=30)
    assert other.json() == {"status": "ignored", "action": "ANNOTATION_CREATED"}


def test_the_projects_two_stage_gate_is_applied(trained_version, tmp_path, files):
    """With the gate on, a film the classifier calls normal comes back as "No finding"
    and no box; below the operating point the boxes stay; a classifier whose files do
    not verify is a 503, not an ungated answer."""
    import torch

    from training.classifier import classifier_config, save_classifier, train_classifier

    torch.set_num_threads(1)
    models = model_dir_with(trained_version.directory, tmp_path)
    cfg = classifier_config(["Nodule/Mass", "Pleural effusion", "No finding"], preset="tiny")
    model = train_classifier(cfg, [film(0), film(1, lesion=False)],
                             np.array([[0, 1, 0], [0, 0, 1]], dtype=np.float32), max_iter=3,
                             seed=0)
    _, digest = save_classifier(model, cfg, models / "c1")
    task = {"project": "1.2", "tasks": [{"id": 1, "data": {"image": f"{files}/lesion.png"}}]}
    answers = {}
    for name, threshold, cls_digest in (("normal", 0.0, digest), ("kept", 1.0, digest),
                                        ("tampered", 0.0, "0" * 64)):
        served = ProjectModel("a", "v1", trained_version.sha256, classifier="c1",
                              classifier_sha256=cls_digest, threshold=threshold)
        app = backend(models, serves=lambda _, s=served: s, image_origins=(files,))
        with serve_wsgi(app) as url:
            answers[name] = requests.post(f"{url}/predict", auth=AUTH, timeout=60, json=task)
    normal = answers["normal"].json()["results"][0]["result"]
    assert [r["type"] for r in normal] == ["choices"]
    assert normal[0]["value"]["choices"] == ["No finding"]
    kept = answers["kept"].json()["results"][0]["result"]
    assert any(r["type"] == "rectanglelabels" for r in kept)
    assert not any(r["type"] == "choices" for r in kept)
    assert answers["tampered"].status_code == 503


def test_the_projects_mask_model_pre_paints_brush_regions(trained_version, tmp_path, files):
    """A promoted mask model answers brush regions readers can correct, beside the
    detector's boxes or alone; a mask model whose files do not verify is a 503."""
    import torch

    from annotations.label_studio.masks import rle_to_mask
    from training.segmenter import save_segmenter, segmenter_config, train_segmenter

    torch.set_num_threads(1)
    models = model_dir_with(trained_version.directory, tmp_path)
    image = film(0)
    lung = np.zeros(image.shape[:2], bool)
    lung[40:200, 30:120] = True
    cfg = segmenter_config(["Right lung"], preset="tiny")
    model = train_segmenter(cfg, [image], [lung[None]], max_iter=60, seed=0)
    _, digest = save_segmenter(model, cfg, models / "s1")
    task = {"project": "1.2", "tasks": [{"id": 1, "data": {"image": f"{files}/lesion.png"}}]}
    answers = {}
    for name, served in (
            ("both", ProjectModel("a", "v1", trained_version.sha256, segmenter="s1",
                                  segmenter_sha256=digest)),
            ("alone", ProjectModel("a", None, None, segmenter="s1", segmenter_sha256=digest)),
            ("tampered", ProjectModel("a", None, None, segmenter="s1",
                                      segmenter_sha256="0" * 64))):
        app = backend(models, serves=lambda _, s=served: s, image_origins=(files,))
        with serve_wsgi(app) as url:
            answers[name] = requests.post(f"{url}/predict", auth=AUTH, timeout=60, json=task)
    both = answers["both"].json()["results"][0]
    assert {r["type"] for r in both["result"]} >= {"rectanglelabels", "brushlabels"}
    alone = answers["alone"].json()["results"][0]
    assert alone["model_version"] == "s1"
    [brush] = alone["result"]
    assert brush["type"] == "brushlabels" and brush["value"]["brushlabels"] == ["Right lung"]
    painted = rle_to_mask(brush["value"]["rle"], brush["original_width"],
                          brush["original_height"])
    assert painted.shape == lung.shape
    assert 2 * (painted & lung).sum() / (painted.sum() + lung.sum()) > 0.7
    assert answers["tampered"].status_code == 503


def test_an_answer_naming_no_model_at_all_is_refused():
    with pytest.raises(ValueError, match="neither"):
        ProjectModel("a", None, None)
