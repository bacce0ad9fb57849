"""Shared data for the format tests: a small multi-reader set on the VinDr taxonomy."""

from __future__ import annotations

import numpy as np

from annotations.consensus.types import ConsensusResult, ImageReads, ReaderRead
from annotations.formats.records import ImageRecord
from annotations.taxonomy import NO_FINDING, preset

TAXONOMY = preset("vindr_cxr")

RECORDS = [
    ImageRecord("img_a", "img_a.png", 1000, 800),
    ImageRecord("img_b", "img_b.png", 640, 480),
    ImageRecord("img_c", "img_c.png", 512, 512),  # nobody read it
]


def reads() -> list[ImageReads]:
    return [
        ImageReads(
            "img_a",
            1000,
            800,
            [
                ReaderRead("R1", [[10.25, 20.5, 300.125, 400.75], [0, 0, 1000, 800]], [3, 0]),
                ReaderRead("R2", [[11.0, 21.0, 299.0, 401.0]], [3]),
                ReaderRead("R3", np.zeros((0, 4)), [], frozenset({NO_FINDING})),
            ],
        ),
        ImageReads(
            "img_b",
            640,
            480,
            [ReaderRead("R1", [[100.333333333, 50.1, 200.7, 90.9]], [13])],
        ),
    ]


def consensus() -> dict[str, ConsensusResult]:
    return {
        "img_a": ConsensusResult(
            boxes=np.array([[10.5, 20.75, 299.5, 400.875]]),
            classes=np.array([3]),
            scores=np.array([0.66]),
            support=[("R1", "R2")],
            image_labels=frozenset(),
        ),
        "img_b": ConsensusResult(
            boxes=np.zeros((0, 4)),
            classes=np.zeros(0, dtype=np.int64),
            scores=np.zeros(0),
            support=[],
            image_labels=frozenset({NO_FINDING}),
        ),
    }


def as_table(images: list[ImageReads]) -> dict[tuple[str, str], tuple]:
    """(image, reader) -> (boxes sorted with their classes, labels) for comparisons."""
    out = {}
    for im in images:
        for r in im.reads:
            order = np.lexsort((*r.boxes.T[::-1], r.classes)) if len(r.boxes) else []
            out[(im.image_id, r.reader)] = (r.boxes[order], r.classes[order], r.image_labels)
    return out


def assert_same_boxes(got: list[ImageReads], want: list[ImageReads], atol: float = 1e-6) -> None:
    g, w = as_table(got), as_table(want)
    assert sorted(g) == sorted(w)
    for key in w:
        np.testing.assert_allclose(g[key][0], w[key][0], atol=atol, rtol=0, err_msg=str(key))
        assert g[key][1].tolist() == w[key][1].tolist(), key
        assert g[key][2] == w[key][2], key
