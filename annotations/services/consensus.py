"""Consensus runs: gather the readers' current annotations, apply a strategy from
the pure engine (``annotations.consensus``), store the result.

A run records the exact annotation versions it read and a digest of its output;
``consensus_run_replay`` re-executes a run from those versions and must produce
the same digest (the engine is deterministic).
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from django.db import transaction
from django.db.models import QuerySet, TextField
from django.db.models.functions import Cast

from annotations import consensus as engine
from annotations.consensus import ConsensusResult, ImageReads, ReaderRead
from annotations.consensus.agreement import image_agreement
from annotations.consensus.image_agreement import label_set_agreement
from annotations.models import (
    AnnotationBox,
    ConsensusBox,
    ConsensusImage,
    ConsensusRun,
    Image,
    LabelClass,
    Project,
    ReaderAnnotation,
)
from annotations.services import runs
from annotations.services.adjudication import adjudications_route
from annotations.services.audit import audit_record
from annotations.services.mask_consensus import (
    mask_agreement_by_image,
    mask_consensus_compute,
    mask_consensus_store,
    masks_digest,
)


def usable_annotations(project: Project, images: Iterable[Image] | None = None):
    """Current, non-excluded annotations of the project (cancelled ones excluded)."""
    qs = ReaderAnnotation.objects.filter(
        image__project=project, is_current=True, excluded_reason="", was_cancelled=False,
    )
    if images is not None:
        qs = qs.filter(image__in=list(images))
    return qs


#: Shared, read-only empty arrays: most reads and most final labels have no box, and an
#: array with no elements cannot be written through.
NO_BOXES = np.zeros((0, 4), dtype=np.float64)
NO_CLASSES = np.zeros(0, dtype=np.int64)
NO_SCORES = np.zeros(0, dtype=np.float64)
for _empty in (NO_BOXES, NO_CLASSES, NO_SCORES):
    _empty.setflags(write=False)


def json_text(field: str) -> Cast:
    """A JSON column read as its text, for ``parse_once``."""
    return Cast(field, output_field=TextField())


def parse_once(make: Callable[[Any], Any]) -> Callable[[str | None], Any]:
    """Parse JSON text into ``make(value)`` once per distinct text: the image labels
    and box supports of 18,000 rows take a handful of distinct values, and decoding
    each row's copy costs more than the rest of turning rows into results."""
    memo: dict[str | None, Any] = {}

    def parse(text: str | None) -> Any:
        if text not in memo:
            memo[text] = make(json.loads(text) if text is not None else ())
        return memo[text]
    return parse


def reads_from_annotations(annotations: Sequence[ReaderAnnotation] | QuerySet
                           ) -> list[ImageReads]:
    """Convert stored annotations (a list, or a queryset: then it stays a subquery) into
    the engine's ImageReads (pure data).

    Rows are read as tuples, not model instances: a reader's agreement at 100,000
    images reads about 18,000 reads and their boxes, and building that many instances
    (and prefetch caches) costs seconds where the tuples cost a fraction of one.
    """
    if isinstance(annotations, QuerySet):
        scope = ReaderAnnotation.objects.filter(pk__in=annotations.order_by().values("pk"))
    else:
        scope = ReaderAnnotation.objects.filter(pk__in=[a.pk for a in annotations])
    rows = list(scope.order_by("id").values_list(
        "pk", "image_id", "image__pseudo_id", "image__width", "image__height",
        "reader__code", json_text("image_labels")))
    boxes: dict[int, list[tuple]] = defaultdict(list)
    for ann_id, *box in (AnnotationBox.objects.filter(annotation__in=scope.order_by()
                                                      .values("pk")).order_by("id")
                         .values_list("annotation_id", "x_min", "y_min", "x_max", "y_max",
                                      "label_class__class_id")):
        boxes[ann_id].append(box)
    by_image: dict[int, list[ReaderRead]] = defaultdict(list)
    images: dict[int, tuple[str, int, int]] = {}
    labels_of = parse_once(frozenset)
    for pk, image_id, pseudo_id, width, height, code, labels in rows:
        mine = boxes.get(pk)
        by_image[image_id].append(ReaderRead(
            reader=code,
            boxes=np.array([b[:4] for b in mine], dtype=np.float64) if mine else NO_BOXES,
            classes=np.array([b[4] for b in mine], dtype=np.int64) if mine else NO_CLASSES,
            image_labels=labels_of(labels),
        ))
        images[image_id] = (pseudo_id, width, height)
    return [
        ImageReads(images[i][0], float(images[i][1]), float(images[i][2]),
                   sorted(reads, key=lambda r: r.reader))
        for i, reads in sorted(by_image.items(), key=lambda kv: images[kv[0]][0])
    ]


def result_digest(results: dict[str, ConsensusResult]) -> str:
    canon = {k: results[k].to_dict() for k in sorted(results)}
    return hashlib.sha256(json.dumps(canon, sort_keys=True).encode()).hexdigest()


def consensus_run_create(
    *,
    project: Project,
    strategy: str | None = None,
    params: dict | None = None,
    images: Sequence[Image] | None = None,
    trigger: str = ConsensusRun.Trigger.MANUAL,
    actor: Any = None,
    enqueue: bool = True,
) -> ConsensusRun:
    """Validate the strategy and parameters now (a clear 400), run in a task."""
    name = strategy or project.consensus_strategy
    params = dict(params if params is not None else (
        project.consensus_params if strategy is None else {}))
    engine.build(name, params)  # raises DomainError for unknown names / bad params
    scope = sorted(i.pseudo_id for i in images) if images is not None else []
    if trigger == ConsensusRun.Trigger.READS_COMPLETE:
        queued = ConsensusRun.objects.filter(
            project=project, status=ConsensusRun.Status.PENDING, strategy=name, params=params,
            image_scope=scope).first()
        if queued is not None:  # it has not read anything yet: it will see this read too
            return queued
    run = ConsensusRun.objects.create(
        project=project, strategy=name, params=params, trigger=trigger,
        image_scope=scope,
        created_by=actor if getattr(actor, "is_authenticated", False) else None,
    )
    audit_record(action="consensus.run_create", actor=actor, project=project, target=run,
                 detail={"strategy": name, "trigger": trigger})
    runs.run_created(run, dispatch=enqueue)
    return run


def _scope_images(run: ConsensusRun) -> list[Image] | None:
    if not run.image_scope:
        return None
    return list(Image.objects.filter(project=run.project, pseudo_id__in=run.image_scope))


def consensus_run_execute(*, run_id: int) -> ConsensusRun:
    """Claim the run, compute, store and finish it in one transaction (a killed
    attempt leaves nothing behind, so a lost run is simply re-queued: see
    ``services.runs``).  A run that is not claimable is left alone; a transient
    database error gives the run back for the task's retry."""
    return runs.run_execute(ConsensusRun, run_id, _execute)


def _execute(run: ConsensusRun) -> None:
    scope = _scope_images(run)
    panel_wide = engine.build(run.strategy, run.params).panel_wide
    annotations = list(usable_annotations(run.project, None if panel_wide else scope))
    results, reads = _compute(run, annotations)
    masks = _compute_masks(run, annotations)
    runs.run_heartbeat(run, cancellable=False)  # computed; storing is one transaction
    with transaction.atomic():
        rows = _store(run, results, reads, mask_agreement_by_image(masks))
        n_masks = mask_consensus_store(rows, masks)
        run.annotations.set(annotations)
        adjudications_route(run=run)
        run.digest = _run_digest(results, masks)
        run.stats = {"images": len(results), "annotations": len(annotations),
                     "boxes": int(sum(len(r.classes) for r in results.values()))}
        if masks:
            run.stats["masks"] = n_masks
        runs.run_finish(run, digest=run.digest, stats=run.stats)


def _compute(run: ConsensusRun, annotations: Sequence[ReaderAnnotation]):
    """Results (and reads) of the run's scope; a strategy that learns from the panel
    has seen every annotation given, but only the scoped images are kept."""
    reads = reads_from_annotations(annotations)
    results = engine.build(run.strategy, run.params).run(reads)
    if run.image_scope:
        scope = set(run.image_scope)
        results = {k: v for k, v in results.items() if k in scope}
        reads = [r for r in reads if r.image_id in scope]
    return results, reads


def _compute_masks(run: ConsensusRun, annotations: Sequence[ReaderAnnotation]):
    return mask_consensus_compute(run, annotations,
                                  set(run.image_scope) if run.image_scope else None)


def _run_digest(results: dict[str, ConsensusResult], masks: dict) -> str:
    """The boxes' digest, extended by the masks' when the run merged any (so a box-only
    run keeps the digest it always had)."""
    digest = result_digest(results)
    if not masks:
        return digest
    return hashlib.sha256(f"{digest}:{masks_digest(masks)}".encode()).hexdigest()


def _store(run: ConsensusRun, results: dict[str, ConsensusResult],
           reads: list[ImageReads], mask_agreement: dict[str, float] | None = None
           ) -> dict[str, ConsensusImage]:
    images = {i.pseudo_id: i for i in Image.objects.filter(
        project=run.project, pseudo_id__in=list(results))}
    classes = {lc.class_id: lc for lc in LabelClass.objects.filter(project=run.project)}
    n_readers = {r.image_id: len(r.reads) for r in reads}
    thr = run.params.get("iou_thr", 0.4)
    thr = thr if isinstance(thr, int | float) else 0.4
    agreement = {r.image_id: _agreement(r, float(thr)) for r in reads}
    for pid, dice in (mask_agreement or {}).items():
        # masks that disagree send the image to adjudication like boxes that do
        agreement[pid] = dice if agreement.get(pid) is None else min(agreement[pid], dice)
    rows = ConsensusImage.objects.bulk_create(
        ConsensusImage(run=run, image=images[pid], image_labels=sorted(res.image_labels),
                       n_readers=n_readers.get(pid, 0), agreement=agreement.get(pid),
                       meta=_jsonable(res.meta))
        for pid, res in sorted(results.items())
    )
    boxes = []
    for row, (_pid, res) in zip(rows, sorted(results.items()), strict=True):
        for pos, (box, cls, score, support) in enumerate(
                zip(res.boxes.tolist(), res.classes.tolist(), res.scores.tolist(), res.support,
                    strict=True)):
            boxes.append(ConsensusBox(
                consensus_image=row, label_class=classes[int(cls)], x_min=box[0], y_min=box[1],
                x_max=box[2], y_max=box[3], score=score, support=list(support), position=pos))
    ConsensusBox.objects.bulk_create(boxes)
    return {pid: row for row, (pid, _res) in zip(rows, sorted(results.items()), strict=True)}


def _agreement(reads: ImageReads, iou_thr: float) -> float | None:
    """How far the image's readers agree, for adjudication: boxes and image-level
    findings, whichever agrees less."""
    scores = [v for v in (image_agreement(reads, iou_thr), label_set_agreement(reads))
              if v is not None]
    return min(scores) if scores else None


def _jsonable(meta: dict) -> dict:
    return json.loads(json.dumps(meta, default=lambda o: o.tolist() if hasattr(o, "tolist")
                                 else str(o)))


def consensus_run_replay(run: ConsensusRun) -> str:
    """Recompute a finished run from the annotation versions it recorded; its digest."""
    annotations = list(run.annotations.all())
    results, _ = _compute(run, annotations)
    return _run_digest(results, _compute_masks(run, annotations))


#: Consensus rows whose boxes are read per query (a bounded IN list).
_BOX_BATCH = 10000


def stored_results(rows: Sequence[tuple[int, str, list, dict]]) -> dict[str, ConsensusResult]:
    """``(ConsensusImage pk, image pseudo id, image labels, meta)`` rows -> engine results
    in row order, their boxes read as tuples (see ``reads_from_annotations``), one query
    per ``_BOX_BATCH`` rows.  What a run's results and the final labels are both made of."""
    boxes: dict[int, list[tuple]] = defaultdict(list)
    pks = [row[0] for row in rows]
    for start in range(0, len(pks), _BOX_BATCH):
        for row_id, *box in (ConsensusBox.objects
                             .filter(consensus_image_id__in=pks[start:start + _BOX_BATCH])
                             .order_by("consensus_image_id", "position")
                             .values_list("consensus_image_id", "x_min", "y_min", "x_max",
                                          "y_max", "label_class__class_id", "score",
                                          json_text("support"))):
            boxes[row_id].append(box)
    support_of = parse_once(tuple)
    out: dict[str, ConsensusResult] = {}
    for pk, pseudo_id, labels, meta in rows:
        mine = boxes.get(pk)
        out[pseudo_id] = ConsensusResult(
            boxes=np.array([b[:4] for b in mine], dtype=np.float64) if mine else NO_BOXES,
            classes=np.array([b[4] for b in mine], dtype=np.int64) if mine else NO_CLASSES,
            scores=np.array([b[5] for b in mine], dtype=np.float64) if mine else NO_SCORES,
            support=[support_of(b[6]) for b in mine] if mine else [],
            image_labels=frozenset(labels), meta=meta,
        )
    return out


def consensus_results(run: ConsensusRun, images: Iterable[Image | int] | None = None
                      ) -> dict[str, ConsensusResult]:
    """Stored output of a run as engine results (for agreement and exports), of
    ``images`` (instances or pks) only when given (an export chunk)."""
    rows = run.images.order_by("image_id")
    if images is not None:
        rows = rows.filter(image_id__in=[getattr(i, "pk", i) for i in images])
    return stored_results(list(rows.values_list("pk", "image__pseudo_id", "image_labels",
                                                "meta")))


def latest_run(project: Project) -> ConsensusRun | None:
    return project.consensus_runs.filter(status=ConsensusRun.Status.DONE,
                                         image_scope=[]).first()
