"""``wbf``: weighted boxes fusion over readers (each reader is one "model").

Readers give no confidences, so every box enters with score 1.0 and reader
weights are the only source of unequal confidence.  Coordinates are
normalised per image (see ``FlatReads.image_scale``), fused by ``wbf_core``
(identical to ensemble-boxes 1.0.9) and scaled back to pixels.

Params: ``iou_thr`` (number or ``{class_id: thr}``, default 0.4),
``default_iou_thr`` (with a per-class dict), ``skip_box_thr`` (0.0),
``conf_type`` (avg | max | box_and_model_avg | absent_model_aware_avg),
``weights`` (``{reader: weight}``, default 1), ``allows_overflow`` (false).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from annotations.consensus.assemble import assemble
from annotations.consensus.flat import FlatReads
from annotations.consensus.params import ParamReader
from annotations.consensus.registry import Strategy, register
from annotations.consensus.types import ConsensusResult, ImageReads
from annotations.consensus.wbf_core import CONF_TYPES, Fused, fuse


@register("wbf")
class WeightedBoxesFusion(Strategy):
    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        super().__init__(params)
        p = ParamReader("wbf", params)
        self.iou_thr = p.class_thresholds()
        self.skip_box_thr = p.number("skip_box_thr", 0.0, lo=0.0, hi=1.0)
        self.conf_type = p.choice("conf_type", "avg", CONF_TYPES)
        self.weights = p.reader_weights()
        self.allows_overflow = p.boolean("allows_overflow", False)
        p.done()

    def fuse_flat(self, flat: FlatReads) -> Fused:
        """Fused boxes in normalised coordinates (what ensemble-boxes would return)."""
        sx, sy = flat.image_scale()
        scale = np.stack([sx, sy, sx, sy], axis=1)[flat.box_image]
        per_reader = np.array([self.weights.get(r, 1.0) for r in flat.readers], dtype=np.float64)
        model_weights = per_reader[flat.read_reader]
        return fuse(
            image=flat.box_image,
            model=flat.box_model,
            labels=flat.box_class,
            boxes=flat.boxes / scale,
            scores=np.ones(len(flat.box_class)),
            model_weights=model_weights,
            model_start=flat.image_read_start,
            iou_thr=self.iou_thr.lookup(flat.box_class),
            skip_box_thr=self.skip_box_thr,
            conf_type=self.conf_type,
            allows_overflow=self.allows_overflow,
        )

    def run_boxes(self, images: Sequence[ImageReads]) -> dict[str, ConsensusResult]:
        flat = FlatReads.build(images)
        fused = self.fuse_flat(flat)
        sx, sy = flat.image_scale()
        scale = np.stack([sx, sy, sx, sy], axis=1)[fused.image]
        return assemble(
            flat,
            fused.image,
            fused.boxes * scale,
            fused.labels,
            fused.scores,
            fused.member_of,
            lambda i: {"strategy": "wbf", "scale": [float(sx[i]), float(sy[i])]},
        )


def reference_inputs(
    flat: FlatReads, weights: Mapping[str, float] | None = None
) -> list[tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], list[float]]]:
    """Per image, the (boxes_list, scores_list, labels_list, weights) that
    ``ensemble_boxes.weighted_boxes_fusion`` needs to see exactly what ``wbf`` sees.

    For tests and the benchmark; the package never imports ensemble-boxes.
    """
    weights = dict(weights or {})
    sx, sy = flat.image_scale()
    out = []
    starts = flat.image_read_start
    box_start = np.searchsorted(flat.box_read, np.arange(len(flat.read_image) + 1))
    for i in range(flat.n_images):
        scale = np.array([sx[i], sy[i], sx[i], sy[i]])
        bl, sl, ll, wl = [], [], [], []
        for r in range(starts[i], starts[i + 1]):
            lo, hi = box_start[r], box_start[r + 1]
            bl.append(flat.boxes[lo:hi] / scale)
            sl.append(np.ones(hi - lo))
            ll.append(flat.box_class[lo:hi])
            wl.append(weights.get(flat.readers[flat.read_reader[r]], 1.0))
        out.append((bl, sl, ll, wl))
    return out
