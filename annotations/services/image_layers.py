"""What the image viewer overlays, with blinding applied in one place.

Layers are boxes in original image pixels: one layer per reader, the consensus
(or the adjudicator's decision) and the model's predictions.  An admin sees every
layer.  A radiologist sees only images assigned to them and, until the image's
consensus is final, only their own layer: never another reader's boxes, the
consensus, or the model's boxes (unless the project shows pre-labels to readers).
"""

from __future__ import annotations

from typing import Any

from annotations.errors import DomainError
from annotations.models import (
    ConsensusImage,
    ConsensusRun,
    Image,
    ModelVersion,
    Prediction,
    ReaderAnnotation,
)
from annotations.selectors import image_list_visible, is_admin, reader_of
from annotations.services import mask_layers
from annotations.services.consensus import reads_from_annotations, usable_annotations
from annotations.services.image_state import image_states
from annotations.services.labels import final_results
from annotations.services.mask_layers import CARDIOMEGALY
from annotations.services.signing import signed_image_path


def _reader_layers(image: Image, only_reader: Any = None) -> list[dict[str, Any]]:
    anns = (ReaderAnnotation.objects.filter(image=image, is_current=True)
            .exclude(source=ReaderAnnotation.Source.ADJUDICATION)  # shown as the consensus
            .select_related("reader").prefetch_related("boxes__label_class")
            .order_by("reader__code"))
    if only_reader is not None:
        anns = anns.filter(reader=only_reader)
    colors = mask_layers.mask_colors(image) if mask_layers.has_masks(image) else None
    return [{
        "kind": "reader", "name": ann.reader.code,
        "excluded": ann.excluded_reason or None, "image_labels": list(ann.image_labels),
        "boxes": [{"label": b.label_class.name, "color": b.label_class.color,
                   "box": [b.x_min, b.y_min, b.x_max, b.y_max]} for b in ann.boxes.all()],
        "outlines": mask_layers.annotation_outlines(ann, colors) if colors is not None else [],
    } for ann in anns]


def _consensus_layer(image: Image) -> dict[str, Any] | None:
    row = (ConsensusImage.objects.filter(image=image, run__status=ConsensusRun.Status.DONE)
           .select_related("run").order_by("-run_id").first())
    final = final_results(image.project, [image]).get(image.pseudo_id)
    if final is None:
        return None
    colors = dict(image.project.label_classes.values_list("class_id", "color"))
    names = dict(image.project.label_classes.values_list("class_id", "name"))
    masks = mask_layers.final_mask_layer(image) if mask_layers.has_masks(image) else \
        {"outlines": [], "ctr": None}
    if masks["ctr"] is not None:  # the ratio's call against the final label
        masks["ctr"]["cardiomegaly_labelled"] = CARDIOMEGALY in final.image_labels or any(
            names.get(int(c)) == CARDIOMEGALY for c in final.classes)
    return {
        "kind": "consensus", "name": "Consensus", **masks,
        "source": final.meta.get("source", "consensus"),
        "strategy": row.run.strategy if row else None,
        "agreement": row.agreement if row else None,
        "image_labels": sorted(final.image_labels),
        "boxes": [{"label": names.get(int(c), str(c)), "color": colors.get(int(c), "#ffffff"),
                   "box": [float(v) for v in b], "score": float(s),
                   "support": list(sup)}
                  for b, c, s, sup in zip(final.boxes, final.classes, final.scores,
                                          final.support, strict=True)],
    }


def _prediction_layer(image: Image) -> dict[str, Any] | None:
    detectors = ModelVersion.objects.filter(project=image.project, kind="detector")
    version = detectors.filter(promoted=True).first() or detectors.first()
    pred = None
    if version is not None:
        pred = Prediction.objects.filter(image=image, model_version=version.name).first()
    if pred is None:  # the newest box prediction (a mask model's rows are drawn apart)
        pred = Prediction.objects.filter(image=image, masks={}).order_by("-updated_at").first()
    if pred is None:
        return None
    colors = dict(image.project.label_classes.values_list("name", "color"))
    return {
        "kind": "model", "name": f"Model {pred.model_version}",
        "uncertainty": pred.uncertainty,
        # the promoted classifier's probabilities per finding, stored with the pre-label
        "findings": _findings(image, pred.image_scores),
        "boxes": [{"label": b["label"], "color": colors.get(b["label"], "#ffffff"),
                   "box": b["box"], "score": b["score"]} for b in pred.boxes],
    }


def _findings(image: Image, scores: dict[str, Any]) -> dict[str, Any] | None:
    probs = (scores or {}).get("probs")
    if not probs:
        return None
    return {"classifier": scores.get("classifier"),
            "threshold": scores.get("threshold", image.project.two_stage_threshold),
            "called_normal": scores.get("called_normal"),
            "probabilities": [{"label": k, "p": float(v)} for k, v in
                              sorted(probs.items(), key=lambda kv: -kv[1])]}


def _pairwise(image: Image, iou_thr: float = 0.4) -> list[dict[str, Any]]:
    """Each pair of readers on this image: IoU-matched F1 over all classes."""
    from annotations.consensus import agreement

    reads = reads_from_annotations(list(usable_annotations(image.project, [image]).exclude(
        source=ReaderAnnotation.Source.ADJUDICATION)))
    return [{"a": p.reader_a, "b": p.reader_b, "f1": p.f1, "n_a": p.n_a, "n_b": p.n_b}
            for p in agreement.pairwise_agreement(reads, iou_thr, [image.pseudo_id])
            if p.class_id is None]


def image_layers(*, user: Any, image_id: str) -> dict[str, Any]:
    """The viewer's data for one image, as this user may see it."""
    image = (image_list_visible(user).filter(pseudo_id=image_id)
             .select_related("project").first())
    if image is None:
        raise DomainError("not_found", "no such image")
    state = image_states(image.project, [image.pk])[image.pk]
    admin = is_admin(user)
    final = state == "final"
    layers: list[dict[str, Any]] = []
    if admin or final:
        layers += _reader_layers(image)
    else:
        layers += _reader_layers(image, only_reader=reader_of(user))
    if admin or final:
        consensus = _consensus_layer(image)
        if consensus is not None:
            consensus["provisional"] = not final  # reads still missing or adjudication due
            layers.append(consensus)
    if admin or final or image.project.show_prelabels:
        model = _prediction_layer(image)
        if model is not None:
            layers.append(model)
        painted = mask_layers.model_mask_layer(image) if mask_layers.has_masks(image) else None
        if painted is not None:
            layers.append({"kind": "model_masks", "boxes": [], **painted})
    agreement, pairs = None, []
    if admin or final:
        agreement = (ConsensusImage.objects.filter(image=image,
                                                   run__status=ConsensusRun.Status.DONE)
                     .order_by("-run_id").values_list("agreement", flat=True).first())
        pairs = _pairwise(image)
    return {
        # a blinded reader is not told whether the others have read or disagreed
        "id": image.pseudo_id, "project": image.project.slug,
        "state": state if admin or final else "not final",
        "blinded": not (admin or final),
        "width": image.width, "height": image.height,
        "display_width": image.display_width, "display_height": image.display_height,
        "url": signed_image_path(image.pseudo_id, "display"),
        "gold": image.is_gold, "view_position": image.view_position,
        "agreement": agreement, "pairs": pairs, "layers": layers,
    }
