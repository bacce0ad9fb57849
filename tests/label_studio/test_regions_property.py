"""Property: pixel -> Label Studio percent -> pixel is exact to 1e-6 px for any box
inside any image, including boxes on the border and regions rotated by a full turn,
and through the display-size path readers use (regions measured on a downscaled
image, mapped back to the original)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from annotations.label_studio import regions

sizes = st.integers(min_value=1, max_value=10_000)


@st.composite
def image_and_box(draw):
    w, h = draw(sizes), draw(sizes)
    fx = sorted(draw(st.lists(st.floats(0, 1), min_size=2, max_size=2)))
    fy = sorted(draw(st.lists(st.floats(0, 1), min_size=2, max_size=2)))
    border = draw(st.sampled_from(["none", "left-top", "right-bottom", "full"]))
    if border in ("left-top", "full"):
        fx[0], fy[0] = 0.0, 0.0
    if border in ("right-bottom", "full"):
        fx[1], fy[1] = 1.0, 1.0
    box = [fx[0] * w, fy[0] * h, fx[1] * w, fy[1] * h]
    if box[2] - box[0] < 1e-3 or box[3] - box[1] < 1e-3:
        box = [0.0, 0.0, float(w), float(h)]
    return w, h, box


@settings(max_examples=400, deadline=None)
@given(image_and_box(), st.sampled_from([0, 360]))
def test_round_trip_exact(case, rotation):
    w, h, box = case
    item = regions.box_region(box, "Nodule/Mass", original_width=w, original_height=h)
    item["value"]["rotation"] = rotation
    parsed = regions.parse_result([item], box_classes=["Nodule/Mass"])
    assert np.abs(parsed.boxes[0] - np.array(box)).max() <= 1e-6


@settings(max_examples=200, deadline=None)
@given(image_and_box(), st.integers(min_value=1, max_value=4096))
def test_display_size_path_exact(case, display_long):
    w, h, box = case
    scale = min(1.0, display_long / max(w, h))
    dw, dh = max(1, round(w * scale)), max(1, round(h * scale))
    percent = regions.box_to_percent(box, w, h)
    item = {"type": "rectanglelabels", "from_name": "label", "to_name": "image",
            "original_width": dw, "original_height": dh, "image_rotation": 0,
            "value": {**percent, "rotation": 0, "rectanglelabels": ["Nodule/Mass"]}}
    parsed = regions.parse_result([item], box_classes=["Nodule/Mass"])
    back = parsed.boxes[0] * [w / dw, h / dh, w / dw, h / dh]
    assert np.abs(back - np.array(box)).max() <= 1e-6
