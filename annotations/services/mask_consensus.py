"""Mask consensus inside a consensus run: per image and structure, the readers' masks
merged by the project's mask strategy (``consensus_params["mask_method"]``: ``staple``,
the default, or ``majority``), stored losslessly beside the run's boxes.

Every reader whose read of the image counts takes part for every structure of the
project: a reader who painted nothing of a structure said it is absent (an empty mask),
which is what a miss is.  Nothing is stored for a structure no reader painted.  Each
stored mask keeps the method's per-reader sensitivity and specificity and the readers'
Dice agreement (pairwise, and each reader against the consensus) in its ``meta``.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from annotations.consensus import mask_agreement
from annotations.consensus import masks as strategies
from annotations.models import (
    AnnotationMask,
    ConsensusImage,
    ConsensusMask,
    ConsensusRun,
    MaskClass,
    ReaderAnnotation,
)
from annotations.services.storage import mask_digest, mask_read, mask_write


@dataclass
class MaskResult:
    mask: np.ndarray
    digest: str
    meta: dict[str, Any] = field(default_factory=dict)


def mask_consensus_compute(run: ConsensusRun, annotations: Sequence[ReaderAnnotation],
                           scope: set[str] | None = None
                           ) -> dict[str, dict[int, MaskResult]]:
    """``{image pseudo id: {mask class pk: result}}`` for the images of ``annotations``."""
    classes = list(MaskClass.objects.filter(project=run.project).order_by("index"))
    if not classes:
        return {}
    strategy = strategies.build(run.params)
    anns = [a for a in ReaderAnnotation.objects.filter(pk__in=[a.pk for a in annotations])
            .select_related("reader", "image").order_by("pk")
            if scope is None or a.image.pseudo_id in scope]
    stored = defaultdict(dict)
    for m in AnnotationMask.objects.filter(annotation__in=anns).only(
            "annotation_id", "mask_class_id", "path"):
        stored[m.annotation_id][m.mask_class_id] = m.path
    by_image: dict[Any, list[ReaderAnnotation]] = defaultdict(list)
    for a in anns:
        by_image[a.image].append(a)
    out: dict[str, dict[int, MaskResult]] = {}
    for image, reads in sorted(by_image.items(), key=lambda kv: kv[0].pseudo_id):
        per_class = {}
        for mc in classes:
            if not any(mc.pk in stored[a.pk] for a in reads):
                continue
            empty = np.zeros((image.height, image.width), bool)
            masks = {a.reader.code: mask_read(stored[a.pk][mc.pk]) if mc.pk in stored[a.pk]
                     else empty for a in reads}
            per_class[mc.pk] = _merge(strategy, masks)
        if per_class:
            out[image.pseudo_id] = per_class
    return out


def _merge(strategy: strategies.MaskStrategy, masks: Mapping[str, np.ndarray]) -> MaskResult:
    result = strategy.merge(masks)
    pair = mask_agreement.pairwise(masks)
    meta = {
        "method": result.method,
        "readers": sorted(masks),
        "sensitivity": {r: round(v, 6) for r, v in result.sensitivity.items()},
        "specificity": {r: round(v, 6) for r, v in result.specificity.items()},
        "pairwise_dice": pair["dice"],
        "pairwise_iou": pair["iou"],
        "reader_vs_consensus": {r: {k: round(v, 6) for k, v in d.items()} for r, d in
                                mask_agreement.reader_vs_consensus(masks, result.mask).items()},
    }
    return MaskResult(mask=result.mask, digest=mask_digest(result.mask), meta=meta)


def mask_agreement_by_image(results: Mapping[str, Mapping[int, MaskResult]]
                            ) -> dict[str, float]:
    """Per image, the lowest pairwise Dice over its structures (for routing)."""
    out = {}
    for pid, per_class in results.items():
        values = [r.meta["pairwise_dice"] for r in per_class.values()
                  if r.meta["pairwise_dice"] is not None]
        if values:
            out[pid] = float(min(values))
    return out


def masks_digest(results: Mapping[str, Mapping[int, MaskResult]]) -> str:
    """Digest of every consensus mask (part of the run's digest; replay must match)."""
    h = hashlib.sha256()
    for pid in sorted(results):
        for pk in sorted(results[pid]):
            h.update(f"{pid}:{pk}:{results[pid][pk].digest};".encode())
    return h.hexdigest()


def mask_consensus_store(rows: Mapping[str, ConsensusImage],
                         results: Mapping[str, Mapping[int, MaskResult]]) -> int:
    """Write the consensus masks of a run's images (``rows`` by pseudo id)."""
    objs = []
    for pid, per_class in results.items():
        row = rows.get(pid)
        if row is None:
            continue
        for pk, res in per_class.items():
            path, digest, area = mask_write(res.mask)
            objs.append(ConsensusMask(consensus_image=row, mask_class_id=pk, path=path,
                                      sha256=digest, area=area, meta=res.meta))
    ConsensusMask.objects.bulk_create(objs)
    return len(objs)
