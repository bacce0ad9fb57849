"""End to end in a real browser: a reader logs into Label Studio and opens a task.

Headless Chromium (``tests/browser.py``) logs in as the reader, opens the task in the
reader's workspace and checks what the reader would see: the image, loaded from the
platform's signed URL across origins (CORS), and, only where the project's
``show_prelabels`` switch is on, the model's pre-label box.  Screenshots are kept as
test artifacts (``$CXR_TEST_ARTIFACTS`` or ``var/test-artifacts``).
"""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
import requests

from annotations.imaging.synthetic import generate_studies
from annotations.models import Image, Prediction, Reader, ReaderAnnotation, WorkspaceTask
from annotations.services import label_studio_sync as sync
from annotations.services import readers
from annotations.services.projects import project_create
from tests.browser import By, TimeoutException, WebDriverWait, artifact_dir, chromium_driver
from tests.conftest import ingest_paths

pytestmark = pytest.mark.django_db(transaction=True)

BOX = [200, 180, 360, 330]  # x_min, y_min, x_max, y_max in original pixels
OUTSIDE = (90, 650)  # a point of the image well away from the box

# What the editor shows once the task is up: the main image element and its state.
EDITOR_STATE_JS = """
const img = document.querySelector('.lsf-image img') || document.querySelector('img[alt="image"]');
const thumb = [...document.querySelectorAll('img')].find(i => i.src.includes('sig='));
const rect = img ? img.getBoundingClientRect() : null;
return {
  image: img && {src: img.src, complete: img.complete, crossOrigin: img.crossOrigin,
                 naturalWidth: img.naturalWidth, naturalHeight: img.naturalHeight,
                 rect: {left: rect.left, top: rect.top, width: rect.width, height: rect.height}},
  thumb: thumb && {src: thumb.src, complete: thumb.complete, crossOrigin: thumb.crossOrigin,
                   naturalWidth: thumb.naturalWidth},
  resources: performance.getEntriesByType('resource')
      .filter(e => e.name.includes('sig='))
      .map(e => ({name: e.name, initiator: e.initiatorType, status: e.responseStatus})),
  tabs: [...document.querySelectorAll('.lsf-annotation-button__main')].map(e => e.innerText),
  scores: [...document.querySelectorAll('[title^="Prediction score"]')].map(e => e.title),
  regions: [...document.querySelectorAll('.lsf-outliner-item')].map(e => e.innerText),
  viewport: window.innerWidth,
};
"""


def browser_settings(settings, label_studio, live_server) -> None:
    """The platform and Label Studio as a browser reaches them (the live server's URL,
    Label Studio's, its image CORS origin)."""
    settings.LABEL_STUDIO_URL = label_studio.url
    settings.LABEL_STUDIO_PUBLIC_URL = label_studio.url
    settings.LABEL_STUDIO_TOKEN = label_studio.token
    settings.LABEL_STUDIO_BRIDGE_SECRET = label_studio.bridge_secret
    settings.PUBLIC_BASE_URL = live_server.url
    settings.PLATFORM_URL_FOR_LABEL_STUDIO = live_server.url
    settings.IMAGE_CORS_ORIGINS = [label_studio.url]


@pytest.fixture
def reading(label_studio, live_server, settings, admin_user, tmp_path):
    """Two one-reader projects, pre-labels on and off, each with one predicted image."""
    browser_settings(settings, label_studio, live_server)
    reader = readers.reader_create(email="reader.browser@example.org", code="R1")
    tasks = {}
    for i, show in enumerate((True, False)):
        project = project_create(name=f"Browser {show}", slug=f"browser-{i}",
                                 readers_per_image=1, show_prelabels=show, actor=admin_user)
        gen = generate_studies(tmp_path / f"gen{i}", 1, seed=21 + i, anatomy="phantom",
                               size=(768, 640), compressed_fraction=0.0)
        ingest_paths(project, list(gen.files))
        image = Image.objects.get(project=project)
        Prediction.objects.create(image=image, model_version="m1", score=0.87, boxes=[
            {"label": "Nodule/Mass", "box": BOX, "score": 0.87}])
        readers.assignments_create(project=project)
        assert sync.assignments_push(project) == 1
        tasks[show] = WorkspaceTask.objects.select_related("workspace", "image").get(
            workspace__project=project)
    return reader, tasks


def _ls_get(label_studio, path: str, task: WorkspaceTask):
    """As the workspace's service user (the only one, besides its reader, who can see it)."""
    resp = requests.get(f"{label_studio.url}{path}", timeout=10,
                        headers={"Authorization": f"Token {task.workspace.service_token}"})
    resp.raise_for_status()
    return resp.json()


def _login(driver, task: WorkspaceTask, reader: Reader) -> None:
    """Sign in the way a reader does: the platform's one-time link to their workspace."""
    driver.get(sync.workspace_sign_in_url(workspace=task.workspace, reader=reader))
    WebDriverWait(driver, 30).until(
        lambda d: f"/projects/{task.workspace.ls_project_id}" in d.current_url,
        "Label Studio did not accept the reader's sign-in link")


def _open_task(driver, label_studio, task: WorkspaceTask, name: str, *, expect_regions: bool
               ) -> tuple[dict, np.ndarray]:
    """Open the task, wait until its image (and regions) show, save and return a screenshot."""
    driver.get(f"{label_studio.url}/projects/{task.workspace.ls_project_id}"
               f"/data?task={task.ls_task_id}")

    def ready(d):
        state = d.execute_script(EDITOR_STATE_JS)
        img = state["image"]
        loaded = img and img["complete"] and img["naturalWidth"] > 0
        return state if loaded and (bool(state["regions"]) or not expect_regions) else False

    try:
        WebDriverWait(driver, 60, poll_frequency=0.5).until(ready)
    except TimeoutException:
        pass  # the assertions on the state below say what is missing
    if not expect_regions:  # give a (wrongly) pushed prediction time to show up
        try:
            WebDriverWait(driver, 3, poll_frequency=0.5).until(
                lambda d: d.execute_script(EDITOR_STATE_JS)["regions"])
        except TimeoutException:
            pass
    driver.execute_script("return new Promise(r => requestAnimationFrame(() => "
                          "requestAnimationFrame(r)))")  # the canvas has painted
    state = driver.execute_script(EDITOR_STATE_JS)
    out = artifact_dir()
    png = driver.get_screenshot_as_png()
    (out / f"{name}.png").write_bytes(png)
    (out / f"{name}.html").write_text(driver.page_source)
    shot = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)  # BGR
    return state, shot


def _pixel(state: dict, shot: np.ndarray, x: float, y: float, width: int, height: int
           ) -> np.ndarray:
    """Mean BGR of the screenshot around image pixel (x, y) of a width x height image."""
    r = state["image"]["rect"]
    scale = shot.shape[1] / state["viewport"]  # device pixels per CSS pixel
    cx = int((r["left"] + x * r["width"] / width) * scale)
    cy = int((r["top"] + y * r["height"] / height) * scale)
    return shot[cy - 3:cy + 4, cx - 3:cx + 4].reshape(-1, 3).mean(axis=0)


def _assert_image_from_signed_url(state: dict, task: WorkspaceTask, label_studio,
                                  live_server) -> tuple[int, int]:
    ls_task = _ls_get(label_studio, f"/api/tasks/{task.ls_task_id}", task)
    url = ls_task["data"]["image"]
    assert url.startswith(f"{live_server.url}/files/images/{task.image.pseudo_id}/")
    assert "sig=" in url and "exp=" in url
    served = requests.get(url, timeout=10)
    assert served.status_code == 200
    width_height = cv2.imdecode(np.frombuffer(served.content, np.uint8),
                                cv2.IMREAD_UNCHANGED).shape[1::-1]
    img = state["image"]
    assert img is not None, ("the labeling page shows no image: did the signed URL load "
                             "(CORS header for Label Studio's origin)?")
    assert img["complete"] and img["naturalWidth"] > 0, f"image did not load: {img}"
    assert (img["naturalWidth"], img["naturalHeight"]) == width_height
    assert img["crossOrigin"] == "anonymous"
    # The editor downloads the signed URL (XHR, CORS mode) and shows it as a blob; a
    # CORS failure would leave the status hidden (0) and the image unloaded.
    assert img["src"] == url or img["src"].startswith(f"blob:{label_studio.url}/")
    fetched = [r for r in state["resources"] if r["name"] == url]
    assert fetched and all(r["status"] == 200 for r in fetched), state["resources"]
    # the task list's thumbnail is the signed URL itself, also cross-origin
    assert state["thumb"]["src"] == url and state["thumb"]["naturalWidth"] > 0
    return width_height


def test_reader_sees_image_and_prelabel_only_when_switched_on(
        reading, label_studio, live_server, tmp_path):
    reader, tasks = reading
    on, off = tasks[True], tasks[False]

    # Label Studio holds the pre-label only for the project that shows them
    preds = _ls_get(label_studio, f"/api/predictions/?task={on.ls_task_id}", on)
    assert len(preds) == 1 and preds[0]["model_version"] == "m1"
    assert preds[0]["score"] == pytest.approx(0.87)
    assert preds[0]["result"][0]["value"]["rectanglelabels"] == ["Nodule/Mass"]
    assert _ls_get(label_studio, f"/api/predictions/?task={off.ls_task_id}", off) == []

    log = label_studio.server.log_path
    refused_before = log.read_text(errors="replace").count("cxr-bridge refused")
    with chromium_driver(tmp_path) as driver:
        _login(driver, on, reader)

        state, shot = _open_task(driver, label_studio, on, "ls_reader_task",
                                 expect_regions=True)
        w, h = _assert_image_from_signed_url(state, on, label_studio, live_server)
        # the prediction tab with its score, and its box as a region
        assert any(t.startswith("m1") and "87.00%" in t for t in state["tabs"]), state["tabs"]
        assert state["scores"] == ["Prediction score = 0.87"]
        assert len(state["regions"]) == 1 and "Nodule/Mass" in state["regions"][0]
        assert "0.87" in state["regions"][0]
        # the box is painted where the model put it: tinted inside, plain grey outside
        cx, cy = (BOX[0] + BOX[2]) / 2, (BOX[1] + BOX[3]) / 2
        for _ in range(10):  # the canvas may paint the region a moment after the DOM
            b, g, r = _pixel(state, shot, cx, cy, w, h)
            if g - b > 25:
                break
            time.sleep(0.5)
            state = driver.execute_script(EDITOR_STATE_JS)
            shot = cv2.imdecode(np.frombuffer(driver.get_screenshot_as_png(), np.uint8),
                                cv2.IMREAD_COLOR)
        assert g - b > 25, f"no box colour at the box centre (BGR {b:.0f},{g:.0f},{r:.0f})"
        b, g, r = _pixel(state, shot, *OUTSIDE, w, h)
        assert max(b, g, r) - min(b, g, r) < 12, "colour outside the box"

        _login(driver, off, reader)  # the other project's workspace: its own sign-in
        state, shot = _open_task(driver, label_studio, off, "ls_reader_task_no_prelabels",
                                 expect_regions=False)
        w, h = _assert_image_from_signed_url(state, off, label_studio, live_server)
        assert state["regions"] == [] and state["scores"] == []
        assert not any(t.startswith("m1") for t in state["tabs"]), state["tabs"]
        b, g, r = _pixel(state, shot, (BOX[0] + BOX[2]) / 2, (BOX[1] + BOX[3]) / 2, w, h)
        assert max(b, g, r) - min(b, g, r) < 12, "a box is painted with pre-labels off"

        # the reader submits in the editor: the read arrives (webhook, re-read from Label
        # Studio), and nothing the editor needed was refused by the bridge
        driver.find_element(By.XPATH, "//button[normalize-space()='Submit']").click()
        WebDriverWait(driver, 30, poll_frequency=0.5).until(
            lambda d: ReaderAnnotation.objects.filter(image=off.image, reader=reader).exists(),
            "the submitted read did not reach the platform")
    refused = log.read_text(errors="replace").count("cxr-bridge refused") - refused_before
    assert refused == 0, "the bridge refused a request of the labeling screen: see " + str(log)
