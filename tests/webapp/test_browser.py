"""The web app in headless Chromium against a live server (acceptance).

* An admin signs in, opens the project's dashboard (imports a good and a corrupt
  file, assigns readers), images and viewer, starts a
  retraining (tiny config) from the Models page and watches its progress reach done:
  the run goes through a real Celery worker on the real broker (``gpu`` queue), and
  a new model version appears with gold-set metrics.
* Quick read: a synthetic DICOM with a known lesion is uploaded; the page draws the
  box and the table; moving the sensitivity slider changes the boxes drawn.
* A radiologist gets 403 on admin pages and sees only their own boxes on an image
  whose consensus is not final.

Every page is saved as a screenshot under ``var/test-artifacts/`` (or
``$CXR_TEST_ARTIFACTS``).
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from annotations.models import ModelVersion, TrainingRun
from tests.browser import By, WebDriverWait, artifact_dir, chromium_driver
from tests.webapp.test_quick_read import lesion_dicom
from tests.webapp.world import (
    PASSWORD,
    build_world,
    promote_tiny_classifier,
    register_version,
    seed_feedback,
)
from tests.worker import BROKER, db_url, empty_broker, stop_worker

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def world(tmp_path, settings):
    settings.MODEL_DIR = tmp_path / "models"
    settings.MODEL_DIR.mkdir()
    return build_world(tmp_path)


def shot(driver, name: str) -> Path:
    """A full-page screenshot (beyond the viewport) through Chromium's DevTools."""
    path = artifact_dir() / f"webapp-{name}.png"
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    data = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}})
    path.write_bytes(base64.b64decode(data["data"]))
    return path


def sign_in(driver, base: str, username: str, password: str) -> None:
    driver.get(f"{base}/login/")
    driver.find_element(By.ID, "id_username").send_keys(username)
    driver.find_element(By.ID, "id_password").send_keys(password)
    driver.find_element(By.ID, "signin").click()
    WebDriverWait(driver, 20).until(lambda d: "/login/" not in d.current_url)


def ready(driver, element_id: str, timeout: float = 30) -> None:
    WebDriverWait(driver, timeout).until(
        lambda d: d.find_element(By.ID, element_id).get_attribute("data-ready") == "true")


@pytest.fixture
def gpu_worker(settings):
    """A real Celery worker on the platform's queues, sharing the live server's database,
    media and model folders; the platform enqueues to the real broker meanwhile."""
    url = db_url()
    client = empty_broker()
    from cxr_platform.celery import app

    def use_broker(eager: bool, url: str | None) -> None:
        """Point the platform's producer at ``url``: forget the producer pool built for
        the previous URL (kombu keeps its pools per URL; they are not closed here)."""
        app.conf.task_always_eager, app.conf.broker_url = eager, url
        app._pool = None
        app.amqp._producer_pool = None

    saved = (app.conf.task_always_eager, app.conf.broker_url)
    use_broker(False, BROKER)
    settings.CELERY_TASK_ALWAYS_EAGER = False
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXR_")}
    env.update(DATABASE_URL=url, CELERY_BROKER_URL=BROKER, PYTHONPATH=str(ROOT),
               CXR_SECRET_KEY=settings.SECRET_KEY, CXR_PSEUDONYM_KEY=settings.PSEUDONYM_KEY,
               CXR_DATA_DIR=str(Path(settings.MEDIA_ROOT).parent),
               CXR_MEDIA_ROOT=str(settings.MEDIA_ROOT), CXR_MODEL_DIR=str(settings.MODEL_DIR),
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "cxr_platform", "worker",
         "-Q", "gpu,ingest,default", "-c", "1", "--pool", "solo",
         "--without-gossip", "--without-mingle", "-l", "INFO",
         "-n", "webapp-test@%h"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    logs: list[str] = []

    def stop() -> str:
        """Stop the worker (once) and return everything it logged."""
        if worker.poll() is None:
            logs.append(stop_worker(worker))
        return "".join(logs)

    try:
        yield stop
    finally:
        stop()
        use_broker(*saved)
        client.flushdb()


def test_admin_retrains_from_the_models_page(world, admin_user, live_server, gpu_worker,
                                             tmp_path):
    base = live_server.url
    with chromium_driver(tmp_path, size=(1440, 1000)) as driver:
        sign_in(driver, base, admin_user.username, "admin-pass-123")
        assert driver.current_url.endswith("/projects/")
        assert "Clinic chest films" in driver.find_element(By.ID, "project-table").text
        shot(driver, "projects")

        driver.find_element(By.LINK_TEXT, "Clinic chest films").click()
        ready(driver, "dashboard")
        imported = driver.find_element(By.CSS_SELECTOR, '[data-stat="imported"] .n').text
        assert imported == "8"
        heat = driver.find_element(By.ID, "heat-table")
        assert len(heat.find_elements(By.CSS_SELECTOR, "td.cell")) == 9  # 3 x 3 readers
        WebDriverWait(driver, 10).until(
            lambda d: d.find_element(By.ID, "latest-run").get_attribute("data-status") == "done")
        # import two files from the page: one good DICOM, one corrupt (the worker ingests)
        corrupt = tmp_path / "corrupt.dcm"
        corrupt.write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00" * 40)
        good = lesion_dicom(tmp_path / "new-case.dcm", seed=11)
        driver.find_element(By.ID, "upload-files").send_keys(f"{good}\n{corrupt}")
        driver.find_element(By.ID, "upload").click()
        WebDriverWait(driver, 120).until(lambda d: d.execute_script(
            "const b = document.getElementById('latest-batch');"
            " return b && b.dataset.pending === '0' && b.textContent.includes('1 imported');"))
        batch = driver.find_element(By.ID, "latest-batch").text
        assert "1 quarantined" in batch, batch
        WebDriverWait(driver, 30).until(lambda d: d.find_element(
            By.CSS_SELECTOR, '[data-stat="imported"] .n').text == "9")
        driver.find_element(By.ID, "assign").click()
        WebDriverWait(driver, 30).until(
            lambda d: "8 new assignments" in d.find_element(By.ID, "action-status").text)
        shot(driver, "dashboard")

        driver.get(f"{base}/projects/clinic/images/")
        ready(driver, "browser")
        assert len(driver.find_elements(By.CSS_SELECTOR, "#grid .thumb")) == 9
        WebDriverWait(driver, 10).until(lambda d: all(
            d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)
            for img in d.find_elements(By.CSS_SELECTOR, "#grid .thumb img")))
        shot(driver, "images")

        driver.get(f"{base}/images/{world.images[1].pseudo_id}/")
        ready(driver, "viewer-page")
        stage = driver.find_element(By.ID, "stage")
        drawn = int(stage.get_attribute("data-boxes"))
        assert drawn == 3  # two readers' boxes and the consensus box
        first = driver.find_element(By.CSS_SELECTOR, "#layers input[type=checkbox]")
        first.click()
        assert int(stage.get_attribute("data-boxes")) == 2
        first.click()
        driver.find_element(By.ID, "zoom-in").click()
        shot(driver, "viewer")

        driver.find_element(By.LINK_TEXT, "Models").click()  # the project's tabs
        WebDriverWait(driver, 20).until(
            lambda d: d.find_element(By.ID, "models").get_attribute("data-ready") == "true")
        driver.find_element(By.CSS_SELECTOR, "#preset option[value=tiny]").click()
        iters = driver.find_element(By.ID, "max_iter")
        iters.clear()
        iters.send_keys("40")
        driver.find_element(By.ID, "retrain").click()
        seen: list[tuple[str, str]] = []
        reloaded = midway = False
        deadline = time.monotonic() + 300
        status = ""
        while time.monotonic() < deadline:
            # one script call: the panel is redrawn on every poll
            state = driver.execute_script(
                "const l = document.getElementById('run-line'),"
                " p = document.getElementById('run-progress');"
                " return l && p ? [l.dataset.status, p.textContent] : null;")
            if state:
                status, progress = state
                if not seen or seen[-1] != (status, progress):
                    seen.append((status, progress))
                if status == "running" and not reloaded:
                    driver.refresh()  # the page picks the run up again from the server
                    reloaded = True
                elif status == "running" and not progress.startswith("0%") and not midway:
                    shot(driver, "models-training")  # mid-run: bar, ETA and loss curve
                    midway = True
                if status in ("done", "failed", "cancelled"):
                    break
            time.sleep(0.5)
        run = TrainingRun.objects.get()
        assert status == "done", (seen, run.reason, gpu_worker()[-3000:])
        assert reloaded, seen  # progress was shown on the way, and again after a reload
        assert seen[-1][1].startswith("100%")
        version = ModelVersion.objects.get(project=world.project)
        assert run.model_version == version and version.metrics.get("map_40") is not None
        row = WebDriverWait(driver, 20).until(lambda d: d.find_element(
            By.CSS_SELECTOR, f'tr[data-version="{version.name}"] td[data-metric="map_40"]'))
        assert row.text == f"{version.metrics['map_40']:.3f}"
        labels = driver.find_element(By.CSS_SELECTOR, f'td[data-labels="{version.name}"]')
        assert labels.text.startswith("hard"), labels.text
        assert "train once with soft_labels" in driver.find_element(By.ID, "soft-compare").text
        shot(driver, "models")
        # two versions trained alike but for soft labels are paired, with their difference
        for name, soft, value in (("clinic-hard", False, 0.41), ("clinic-soft", True, 0.46)):
            params = {**run.params, "seed": 11, "soft_labels": soft}
            twin = TrainingRun.objects.create(project=world.project, params=params,
                                              status="done")
            ModelVersion.objects.create(project=world.project, name=name, sha256="0" * 64,
                                        config="", training_run=twin,
                                        train_images=version.train_images,
                                        metrics={"map_40": value})
        driver.refresh()
        pair = WebDriverWait(driver, 20).until(lambda d: d.find_element(
            By.CSS_SELECTOR, '.soft-pair[data-soft="clinic-soft"][data-hard="clinic-hard"]'))
        assert "+0.050" in pair.text and "helped" in pair.text, pair.text

        driver.get(f"{base}/projects/clinic/active-learning/")
        ready(driver, "al")
        shot(driver, "active-learning")
        seed_feedback(world, version.name)
        driver.get(f"{base}/projects/clinic/feedback/")
        ready(driver, "feedback")
        rates = driver.find_element(By.CSS_SELECTOR, "#rates tbody tr").text
        # 4 shown: 2 accepted, 1 adjusted, 1 rejected; 1 of 4 final boxes missed
        assert "Pleural effusion 4 50% 25% 25% 25% (1)" in rates, rates
        assert "1 of 2 found the prediction useful" in driver.page_source
        shot(driver, "feedback")
    worker_log = gpu_worker()
    assert "annotations.tasks.gpu_training_task" in worker_log  # ran on the worker


def test_quick_read_slider_redraws(world, admin_user, live_server, trained_version, settings,
                                   tmp_path):
    from selenium.webdriver.common.keys import Keys

    register_version(world.project, trained_version, settings.MODEL_DIR)
    dicom = lesion_dicom(tmp_path / "case.dcm")
    with chromium_driver(tmp_path, size=(1440, 1000)) as driver:
        sign_in(driver, live_server.url, admin_user.username, "admin-pass-123")
        driver.get(f"{live_server.url}/quick-read/")
        driver.find_element(By.ID, "qr-file").send_keys(str(dicom))
        driver.find_element(By.ID, "qr-run").click()
        ready(driver, "quick-read", timeout=90)
        stage = driver.find_element(By.ID, "stage")
        WebDriverWait(driver, 10).until(lambda d: stage.get_attribute("data-loaded") == "true")
        rows = driver.find_elements(By.CSS_SELECTOR, "#predictions tbody tr[data-score]")
        assert rows and "Pleural effusion" in rows[0].text
        at_half = int(stage.get_attribute("data-boxes"))
        shown = len(driver.find_elements(By.CSS_SELECTOR, "#predictions tr.shown"))
        assert at_half == shown >= 1
        shot(driver, "quick-read")
        slider = driver.find_element(By.ID, "threshold")
        slider.send_keys(Keys.END)  # least sensitive: only boxes scoring 1.0 remain
        at_max = int(stage.get_attribute("data-boxes"))
        slider.send_keys(Keys.HOME)  # most sensitive: every box down to the floor
        at_min = int(stage.get_attribute("data-boxes"))
        assert at_max < at_half <= at_min == len(rows)
        assert driver.find_element(By.ID, "threshold-v").text == "0.05"
        shot(driver, "quick-read-sensitive")


COLOURED = """const c = document.querySelector('#stage canvas');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0, grey = 0;
  for (let i = 0; i < d.length; i += 4) {
    if (Math.abs(d[i] - d[i + 2]) > 40) n++; else grey += d[i];
  }
  return [n, grey];"""


def test_quick_read_grad_cam_layer_draws_toggles_and_follows_window(
        world, admin_user, live_server, trained_version, settings, tmp_path):
    """The classifier's Grad-CAM overlay in Quick read: drawn in colour over the film,
    its opacity from the slider, gone when turned off, and window/level still changes
    the film under it."""
    register_version(world.project, trained_version, settings.MODEL_DIR)
    promote_tiny_classifier(world.project)
    dicom = lesion_dicom(tmp_path / "case.dcm")
    with chromium_driver(tmp_path, size=(1440, 1000)) as driver:
        sign_in(driver, live_server.url, admin_user.username, "admin-pass-123")
        driver.get(f"{live_server.url}/quick-read/")
        driver.find_element(By.ID, "qr-file").send_keys(str(dicom))
        driver.find_element(By.ID, "qr-run").click()
        ready(driver, "quick-read", timeout=90)
        stage = driver.find_element(By.ID, "stage")
        WebDriverWait(driver, 10).until(lambda d: stage.get_attribute("data-loaded") == "true")
        findings = driver.find_elements(By.CSS_SELECTOR, "#findings tbody tr[data-label]")
        assert len(findings) == world.project.label_classes.count()
        assert driver.find_element(By.ID, "heat-controls").is_displayed()
        off, grey_off = driver.execute_script(COLOURED)
        assert off == 0  # a grey film, no overlay yet
        choice = driver.find_elements(By.CSS_SELECTOR, "#heat-class option")[1]
        label = choice.get_attribute("value")
        choice.click()
        WebDriverWait(driver, 10).until(lambda d: stage.get_attribute("data-heatmap") == label)
        half, _ = driver.execute_script(COLOURED)
        assert half > 0, "the overlay draws in colour"
        shot(driver, "quick-read-grad-cam")
        driver.execute_script("const s = document.getElementById('heat-opacity');"
                              " s.value = '0'; s.dispatchEvent(new Event('input'));")
        assert stage.get_attribute("data-heatmap-opacity") == "0"
        assert driver.execute_script(COLOURED)[0] == 0  # transparent at opacity 0
        driver.execute_script("const s = document.getElementById('heat-opacity');"
                              " s.value = '1'; s.dispatchEvent(new Event('input'));")
        full, grey_full = driver.execute_script(COLOURED)
        assert full >= half
        # window/level re-maps the film under the overlay, which stays
        driver.execute_script("window.cxrViewer.setWindow(60, 40);")
        after, grey_after = driver.execute_script(COLOURED)
        assert stage.get_attribute("data-heatmap") == label and after > 0
        assert grey_after != grey_full and "W 40 L 60" in stage.text
        driver.find_element(By.CSS_SELECTOR, "#heat-class option[value='']").click()
        WebDriverWait(driver, 10).until(lambda d: stage.get_attribute("data-heatmap") is None)
        assert driver.execute_script(COLOURED)[0] == 0


def test_viewer_explains_a_model_box(world, admin_user, live_server, trained_version, settings,
                                     tmp_path):
    from annotations.services.prelabeling import prelabel_run_create, prelabel_run_execute

    register_version(world.project, trained_version, settings.MODEL_DIR)
    image = world.images[1]
    assert prelabel_run_execute(run_id=prelabel_run_create(
        project=world.project, images=[image], enqueue=False).pk).status == "done"
    with chromium_driver(tmp_path, size=(1440, 1000)) as driver:
        sign_in(driver, live_server.url, admin_user.username, "admin-pass-123")
        driver.get(f"{live_server.url}/images/{image.pseudo_id}/")
        ready(driver, "viewer-page")
        stage = driver.find_element(By.ID, "stage")
        base = driver.execute_script(COLOURED)[0]  # the layers' coloured boxes and labels
        driver.find_element(By.CSS_SELECTOR, "#heat-class option[value='box=0']").click()
        WebDriverWait(driver, 30).until(lambda d: stage.get_attribute("data-heatmap") == "box=0")
        assert driver.execute_script(COLOURED)[0] > base + 200
        shot(driver, "viewer-box-explanation")
        driver.find_element(By.CSS_SELECTOR, "#heat-class option[value='']").click()
        WebDriverWait(driver, 10).until(lambda d: stage.get_attribute("data-heatmap") is None)
        assert driver.execute_script(COLOURED)[0] == base


def test_radiologist_blinded_and_kept_out(world, live_server, tmp_path):
    reader = world.reader_of_image(4, 0)  # read image 4, whose consensus is not final
    with chromium_driver(tmp_path) as driver:
        sign_in(driver, live_server.url, reader.user.username, PASSWORD)
        assert driver.current_url.endswith("/home/")
        assert "My agreement with the consensus" in driver.page_source
        shot(driver, "radiologist-home")
        for page in ("/projects/", "/projects/clinic/", "/projects/clinic/models/"):
            driver.get(f"{live_server.url}{page}")
            assert "403" in driver.find_element(By.TAG_NAME, "h1").text, page
        shot(driver, "radiologist-403")
        status = driver.execute_script(
            "return fetch('/api/projects/clinic/dashboard/').then(r => r.status)")
        assert status == 403
        driver.get(f"{live_server.url}/images/{world.images[4].pseudo_id}/")
        ready(driver, "viewer-page")
        assert driver.find_element(By.ID, "blinded-notice").is_displayed()
        layers = driver.find_elements(By.CSS_SELECTOR, "#layers input[type=checkbox]")
        assert [el.get_attribute("data-layer") for el in layers] == [reader.code]
        assert int(driver.find_element(By.ID, "stage").get_attribute("data-boxes")) == 1
        layers_json = driver.execute_script(
            f"return fetch('/api/images/{world.images[4].pseudo_id}/layers/')"
            ".then(r => r.json())")
        assert {layer["kind"] for layer in layers_json["layers"]} == {"reader"}
        shot(driver, "radiologist-viewer")
