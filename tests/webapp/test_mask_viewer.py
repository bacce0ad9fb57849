"""Masks in the viewer: each reader's outlines, the final masks' outlines and the
cardiothoracic ratio with its two lines; blinded like boxes; drawn in the browser
(toggling a layer removes its outlines); and the project's CTR report against the
readers' cardiomegaly labels."""

from __future__ import annotations

import numpy as np
import pytest
from rest_framework.test import APIClient

from annotations.models import Image
from annotations.services import readers
from annotations.services.annotating import BoxIn, MaskIn, reader_annotation_record
from annotations.services.consensus import consensus_run_create, consensus_run_execute
from annotations.services.image_layers import image_layers
from annotations.services.projects import project_create
from tests.browser import By, WebDriverWait, chromium_driver
from tests.conftest import ingest_paths, write_png
from tests.masks import ellipse
from tests.webapp.test_browser import ready, shot, sign_in

pytestmark = pytest.mark.django_db(transaction=True)

H, W = 300, 400
PASSWORD = "reader-pass-123"


def _ellipse(cx, cy, ax, ay) -> np.ndarray:
    return ellipse((H, W), cx, cy, ax, ay)


#: lungs 60..339 (280 px wide); the heart 150 px wide on film 0 (CTR 0.536), 100 on film 1
RIGHT, LEFT = _ellipse(130, 150, 70, 110), _ellipse(270, 150, 70, 110)
HEARTS = (_ellipse(200, 200, 75, 50), _ellipse(200, 200, 50, 40))


@pytest.fixture
def masked(tmp_path, settings):
    project = project_create(name="CTR", slug="ctr", readers_per_image=2,
                             mask_preset="anatomy")
    ingest_paths(project, [write_png(tmp_path / f"f{i}.png", seed=40 + i, size=(H, W))
                           for i in range(2)])
    rs = []
    for i in (1, 2):
        r = readers.reader_create(email=f"ctr{i}@example.org", code=f"K{i}")
        r.user.set_password(PASSWORD)
        r.user.save()
        rs.append(r)
    images = list(Image.objects.filter(project=project).order_by("id"))
    readers.assignments_create(project=project, images=images)
    return project, rs, images


def _read(image, reader, heart, cardiomegaly_box=False):
    boxes = [BoxIn("Cardiomegaly", 120, 150, 280, 250)] if cardiomegaly_box else []
    reader_annotation_record(image=image, reader=reader, boxes=boxes, trigger_consensus=False,
                             masks=[MaskIn("Heart", heart), MaskIn("Right lung", RIGHT),
                                    MaskIn("Left lung", LEFT)])


def _consensus(project):
    run = consensus_run_execute(run_id=consensus_run_create(project=project, strategy="wbf",
                                                            enqueue=False).pk)
    assert run.status == "done", run.reason


def test_reader_sees_only_own_outlines_until_final_then_all_and_the_ctr(masked):
    project, (k1, k2), images = masked
    _read(images[0], k1, HEARTS[0])
    blinded = image_layers(user=k1.user, image_id=images[0].pseudo_id)
    assert blinded["blinded"] and [l_["name"] for l_ in blinded["layers"]] == ["K1"]
    assert {o["label"] for o in blinded["layers"][0]["outlines"]} == \
        {"Heart", "Right lung", "Left lung"}
    _read(images[0], k2, HEARTS[0])
    _consensus(project)
    seen = image_layers(user=k1.user, image_id=images[0].pseudo_id)
    kinds = [l_["kind"] for l_ in seen["layers"]]
    assert kinds == ["reader", "reader", "consensus"]
    consensus = seen["layers"][2]
    assert len(consensus["outlines"]) == 3
    ctr = consensus["ctr"]
    assert ctr["ratio"] == pytest.approx(151 / 281, abs=0.01) and ctr["cardiomegaly"]
    assert ctr["cardiac"]["x1"] - ctr["cardiac"]["x0"] == pytest.approx(151, abs=2)
    assert ctr["cardiomegaly_labelled"] is False  # nobody drew a cardiomegaly box


def test_a_reader_never_gets_the_model_masks_before_final_without_prelabels(masked):
    from annotations.models import Prediction
    from annotations.services.projects import project_update
    from annotations.services.storage import mask_write

    project, (k1, _k2), images = masked
    path, digest, area = mask_write(HEARTS[0])
    Prediction.objects.create(image=images[0], model_version="seg-x", score=0.9, boxes=[],
                              masks={"segmenter": "seg-x", "classes": {"Heart": {
                                  "path": path, "sha256": digest, "area": area}}})
    _read(images[0], k1, HEARTS[1])
    kinds = [l_["kind"] for l_ in image_layers(user=k1.user, image_id=images[0].pseudo_id)
             ["layers"]]
    assert kinds == ["reader"]  # no model masks, no consensus, no CTR
    project_update(project=project, show_prelabels=True)  # the project shows pre-labels
    kinds = [l_["kind"] for l_ in image_layers(user=k1.user, image_id=images[0].pseudo_id)
             ["layers"]]
    assert kinds == ["reader", "model_masks"]


def test_ctr_report_sets_the_measurement_against_the_labels(masked):
    project, (k1, k2), images = masked
    for img, heart in zip(images, HEARTS, strict=True):
        _read(img, k1, heart, cardiomegaly_box=img == images[0])
        _read(img, k2, heart, cardiomegaly_box=img == images[0])
    _consensus(project)
    api = APIClient()
    api.force_authenticate(project.created_by or _admin())
    report = api.get(f"/api/projects/{project.slug}/ctr/").json()
    rows = {r["image"]: r for r in report["images"]}
    big, small = rows[images[0].pseudo_id], rows[images[1].pseudo_id]
    assert big["cardiomegaly"] and big["labelled"] and big["readers_boxed"] == ["K1", "K2"]
    assert not small["cardiomegaly"] and not small["labelled"]
    assert small["ratio"] == pytest.approx(101 / 281, abs=0.01)
    assert report["summary"]["agreement"] == 1.0 and report["summary"]["kappa"] == 1.0
    resp = api.patch(f"/api/projects/{project.slug}/", {"ctr_threshold": 0.6}, format="json")
    assert resp.status_code == 200, resp.content
    again = api.get(f"/api/projects/{project.slug}/ctr/").json()
    assert again["summary"]["flagged"] == 0 and again["summary"]["labelled_only"] == 1
    as_reader = APIClient()
    as_reader.force_authenticate(k1.user)
    assert as_reader.get(f"/api/projects/{project.slug}/ctr/").status_code == 403


def test_viewer_draws_outlines_and_the_ctr_lines(masked, admin_user, live_server, tmp_path):
    project, (k1, k2), images = masked
    _read(images[0], k1, HEARTS[0])
    _read(images[0], k2, HEARTS[0])
    _consensus(project)
    with chromium_driver(tmp_path, size=(1280, 900)) as driver:
        sign_in(driver, live_server.url, admin_user.username, "admin-pass-123")
        driver.get(f"{live_server.url}/images/{images[0].pseudo_id}/")
        ready(driver, "viewer-page")
        stage = driver.find_element(By.ID, "stage")
        WebDriverWait(driver, 10).until(lambda d: stage.get_attribute("data-outlines") == "9")
        assert stage.get_attribute("data-ctr") == f"{151 / 281:.3f}"
        assert "cardiomegaly" in driver.find_element(By.ID, "facts").text
        shot(driver, "viewer-masks-ctr")
        driver.find_element(By.CSS_SELECTOR, "input[data-layer='Consensus']").click()
        WebDriverWait(driver, 10).until(lambda d: stage.get_attribute("data-outlines") == "6")
        assert stage.get_attribute("data-ctr") == ""
        driver.find_element(By.CSS_SELECTOR, "input[data-layer='K1']").click()
        WebDriverWait(driver, 10).until(lambda d: stage.get_attribute("data-outlines") == "3")


def _admin():
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user(username="ctr-admin@example.org",
                                                is_staff=True)


def test_models_page_starts_a_mask_model_run(masked, admin_user, live_server, tmp_path):
    from selenium.webdriver.support.ui import Select

    from annotations.models import TrainingRun

    project, *_ = masked
    with chromium_driver(tmp_path, size=(1280, 900)) as driver:
        sign_in(driver, live_server.url, admin_user.username, "admin-pass-123")
        driver.get(f"{live_server.url}/projects/{project.slug}/models/")
        WebDriverWait(driver, 20).until(lambda d: d.find_element(By.ID, "task"))
        Select(driver.find_element(By.ID, "task")).select_by_value("segmenter")
        options = [o.get_attribute("value") for o in
                   driver.find_elements(By.CSS_SELECTOR, "#preset option")]
        assert options == ["unet", "tiny"]
        assert not driver.find_element(By.ID, "soft-labels-row").is_displayed()
        Select(driver.find_element(By.ID, "preset")).select_by_value("tiny")
        field = driver.find_element(By.ID, "max_iter")
        field.clear()
        field.send_keys("20")
        driver.find_element(By.ID, "retrain").click()
        WebDriverWait(driver, 20).until(lambda d: TrainingRun.objects.filter(
            project=project).exists())
    params = TrainingRun.objects.get(project=project).params
    assert params["task"] == "segmenter" and params["preset"] == "tiny"
    assert params["max_iter"] == 20 and params["soft_labels"] is False  # the default
