"""Reader agreement over a project or a subset of its images (a read-only service)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from annotations.consensus import agreement, image_agreement
from annotations.models import ConsensusRun, LabelClass, Project
from annotations.services.consensus import (
    consensus_results,
    reads_from_annotations,
    usable_annotations,
)


def agreement_report(
    *,
    project: Project,
    run: ConsensusRun | None = None,
    image_ids: Collection[str] | None = None,
    iou_thr: float = 0.4,
) -> dict[str, Any]:
    """Pairwise IoU-matched F1 per class, Fleiss' kappa per class (box presence and
    image-level labels), and (with a consensus run) each reader against the consensus
    (boxes, and the 2x2 table per image-level label)."""
    reads = reads_from_annotations(list(usable_annotations(project)))
    names = dict(LabelClass.objects.filter(project=project).values_list("class_id", "name"))
    box_classes = sorted(LabelClass.objects.filter(project=project, image_level=False)
                         .values_list("class_id", flat=True))

    def named(row: dict[str, Any]) -> dict[str, Any]:
        cid = row.get("class_id")
        return {**row, "class_name": names.get(cid) if cid is not None else None}

    report: dict[str, Any] = {
        "iou_thr": iou_thr,
        "images": len(reads) if image_ids is None else len(
            [r for r in reads if r.image_id in set(image_ids)]),
        "pairwise": [named(p.to_dict()) for p in
                     agreement.pairwise_agreement(reads, iou_thr, image_ids)],
        "kappa": [named(k.to_dict()) for k in
                  agreement.presence_kappa(reads, box_classes, image_ids)],
    }
    labels = list(LabelClass.objects.filter(project=project, image_level=True)
                  .order_by("class_id").values_list("name", flat=True))
    report["image_kappa"] = [k.to_dict() for k in
                             image_agreement.image_label_kappa(reads, labels, image_ids)]
    if run is not None:
        results = consensus_results(run)
        report["consensus_run"] = run.pk
        report["reader_vs_consensus"] = [
            r.to_dict() for r in agreement.reader_vs_consensus(
                reads, results, iou_thr, image_ids)]
        report["image_reader_vs_consensus"] = [
            r.to_dict() for r in image_agreement.image_label_vs_consensus(
                reads, results, labels, image_ids)]
    return report
