"""Mask regions that try to cost memory or CPU, or to be stored distorted, are refused
before anything is decoded or stored, with a clear error (no Label Studio needed: the
same functions read Label Studio's copy of an annotation)."""

from __future__ import annotations

import numpy as np
import pytest

from annotations.errors import DomainError
from annotations.label_studio.masks import MAX_RLE_BYTES, brush_region, rle_to_mask
from annotations.models import Image
from annotations.services.label_studio_sync import (
    _without_brush_codes,
    ls_result_masks,
    ls_result_signature,
)
from annotations.services.projects import project_create
from tests.conftest import ingest_paths, write_png

pytestmark = pytest.mark.django_db


@pytest.fixture
def image(tmp_path):
    project = project_create(name="Bounds", slug="bounds", mask_preset="anatomy")
    ingest_paths(project, [write_png(tmp_path / "b.png", seed=1, size=(200, 240))])
    return Image.objects.get(project=project)


def _heart(image, h=None, w=None) -> np.ndarray:
    m = np.zeros((h or image.display_height, w or image.display_width), bool)
    m[20:60, 30:90] = True
    return m


def test_a_canvas_other_than_the_films_is_refused_not_stretched(image):
    for h, w in ((1, 1), (image.display_height, image.display_width + 7)):
        result = {"result": [brush_region(_heart(image, h, w), "Heart")]}
        with pytest.raises(DomainError, match="canvas"):
            ls_result_masks(result, image)
    ok = ls_result_masks({"result": [brush_region(_heart(image), "Heart")]}, image)
    assert ok[0].mask.shape == (image.height, image.width)


def test_too_many_regions_and_overlong_codes_are_refused_before_decoding(image):
    many = [brush_region(_heart(image), "Heart")] * 65
    with pytest.raises(DomainError, match="more than 64"):
        ls_result_masks({"result": many}, image)
    header = list((4 * 4096 * 4096).to_bytes(4, "big"))
    with pytest.raises(DomainError, match="longer than"):
        rle_to_mask(header + [0] * MAX_RLE_BYTES, 4096, 4096)


def test_malformed_results_are_invalid_regions_not_crashes(image):
    for result in ("x", [1, 2], [{"type": "brushlabels", "value": "paint"}],
                   [{"type": "polygonlabels", "original_width": image.display_width,
                     "original_height": image.display_height, "image_rotation": "a lot",
                     "value": {"points": [[1, 1]] * 3, "polygonlabels": ["Heart"]}}],
                   [{"type": "polygonlabels", "original_width": image.display_width,
                     "original_height": image.display_height,
                     "value": {"points": [{"x": 1}] * 3, "polygonlabels": ["Heart"]}}]):
        with pytest.raises(DomainError) as err:
            ls_result_masks({"result": result}, image)
        assert err.value.code == "invalid_region"


def test_the_forgery_check_compares_masks_without_decoding_them(image):
    held = {"result": [brush_region(_heart(image), "Heart")]}
    claimed = {"result": [dict(held["result"][0])]}
    assert ls_result_signature(claimed, image) == ls_result_signature(held, image)
    bogus = {"result": [{**held["result"][0], "value": {
        **held["result"][0]["value"], "rle": [255] * 10_000}}]}
    # differs, and is never expanded: a damaged code would raise if it were decoded
    assert ls_result_signature(bogus, image) != ls_result_signature(held, image)


def test_violations_keep_a_digest_of_brush_codes_not_the_paint(image):
    kept = _without_brush_codes([brush_region(_heart(image), "Heart")])
    assert set(kept[0]["value"]["rle"]) == {"bytes", "sha256"}
    assert _without_brush_codes("junk") is None
