"""A reader paints a mask with the brush of the platform-generated labeling config, in a
real browser on a real Label Studio, and the platform stores exactly the pixels Label
Studio holds (decoded from its own copy of the annotation, at the film's size)."""

from __future__ import annotations

import numpy as np
import pytest
from selenium.webdriver.common.action_chains import ActionChains

from annotations.imaging.synthetic import generate_studies
from annotations.label_studio.masks import rle_to_mask
from annotations.models import Image, ReaderAnnotation, WorkspaceTask
from annotations.services import label_studio_sync as sync
from annotations.services import readers
from annotations.services.projects import project_create
from annotations.services.storage import mask_read
from tests.browser import By, WebDriverWait, chromium_driver
from tests.conftest import ingest_paths
from tests.label_studio.test_browser import (
    EDITOR_STATE_JS,
    _login,
    _open_task,
    browser_settings,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def painting(label_studio, live_server, settings, admin_user, tmp_path):
    browser_settings(settings, label_studio, live_server)
    reader = readers.reader_create(email="painter@example.org", code="P1")
    project = project_create(name="Paint", slug="paint", readers_per_image=1,
                             mask_preset="anatomy", actor=admin_user)
    gen = generate_studies(tmp_path / "gen", 1, seed=31, anatomy="phantom", size=(640, 640),
                           compressed_fraction=0.0)
    ingest_paths(project, list(gen.files))
    readers.assignments_create(project=project)
    assert sync.assignments_push(project) == 1
    task = WorkspaceTask.objects.select_related("workspace", "image").get(
        workspace__project=project)
    return reader, task


def test_reader_paints_a_heart_with_the_brush_and_the_platform_stores_those_pixels(
        painting, label_studio, tmp_path):
    reader, task = painting
    with chromium_driver(tmp_path, size=(1400, 1000)) as driver:
        _login(driver, task, reader)
        state, _ = _open_task(driver, label_studio, task, "ls_brush_task", expect_regions=False)
        assert state["image"] and state["image"]["naturalWidth"] > 0
        # pick the brush's "Heart" (the first "Heart" label: the brush control's)
        labels = [e for e in driver.find_elements(By.CSS_SELECTOR, ".lsf-label")
                  if e.text.strip().startswith("Heart")]
        assert labels, "the generated config offers no Heart label"
        labels[0].click()
        img = driver.find_element(By.CSS_SELECTOR, ".lsf-image img, img[alt='image']")
        rect = state["image"]["rect"]
        stroke = ActionChains(driver)
        stroke.move_to_element_with_offset(img, int(-rect["width"] * 0.15), 0)
        stroke.click_and_hold()
        for _ in range(12):
            stroke.move_by_offset(int(rect["width"] * 0.025), 2)
        stroke.release().perform()
        WebDriverWait(driver, 10).until(
            lambda d: d.execute_script(EDITOR_STATE_JS)["regions"],
            "the brush stroke made no region")
        driver.find_element(By.XPATH, "//button[normalize-space()='Submit']").click()
        WebDriverWait(driver, 30, poll_frequency=0.5).until(
            lambda d: ReaderAnnotation.objects.filter(image=task.image, reader=reader).exists(),
            "the painted read did not reach the platform")
    read = ReaderAnnotation.objects.get(image=task.image, reader=reader, is_current=True)
    [stored] = read.masks.select_related("mask_class")
    assert stored.mask_class.name == "Heart" and stored.area > 100
    held = sync.ws_client(task.workspace).list_annotations(task.ls_task_id)
    [brush] = [r for a in held for r in a["result"] if r["type"] == "brushlabels"]
    painted = rle_to_mask(brush["value"]["rle"], brush["original_width"],
                          brush["original_height"])
    image = Image.objects.get(pk=task.image_id)
    assert painted.shape == (image.display_height, image.display_width)
    got = mask_read(stored.path)
    if painted.shape == got.shape:
        assert (got == painted).all()  # exactly the pixels Label Studio holds
    else:  # painted on the display derivative: each display pixel covers its originals
        import cv2

        up = cv2.resize(painted.astype(np.uint8), (image.width, image.height),
                        interpolation=cv2.INTER_NEAREST).astype(bool)
        assert (got == up).all()
