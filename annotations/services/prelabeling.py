"""Batch pre-labelling: run a model version over images, store its predictions
(boxes, scores, per-class probabilities) and each image's uncertainty scores,
and, where the project's switch allows, put them into readers' workspaces.

Which version: the one named, else the project's promoted version in the
registry (``selectors.model_version_promoted``), never a file on disk, so
promoting another project's model changes nothing here.  A version registered
to another project is refused (its classes are that project's).

Re-running the same model version over the same images updates its predictions
(one row per image and version), never duplicates them.  The model sees the
display derivative, as readers do; boxes are stored in original pixels.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.utils import timezone

from annotations.errors import DomainError
from annotations.models import (
    Image,
    ModelVersion,
    Prediction,
    PrelabelRun,
    Project,
    WorkspaceTask,
)
from annotations.selectors import model_version_promoted
from annotations.services import locks, runs
from annotations.services.audit import audit_record
from annotations.services.explanations import promoted_classifier
from annotations.services.label_studio_sync import ws_client
from annotations.services.prelabels import FINDING_PRESELECT, prelabel_for
from annotations.services.storage import mask_write, model_dir, read_display
from annotations.taxonomy import NO_FINDING

logger = logging.getLogger(__name__)
Progress = Callable[[int, int], None]


def promoted_version(project: Project) -> str | None:
    """The name of ``project``'s promoted version (the registry's), or None."""
    version = model_version_promoted(project)
    return version.name if version else None


def version_files(version: str) -> Path:
    """The folder of a model version by name; a clear error when it is not there."""
    if not version or "/" in version or "\\" in version or version.startswith("."):
        raise DomainError("invalid", "a model version is a name, not a path")
    try:
        path = model_dir(version)
    except DomainError:
        path = None
    if path is None or not (path / "config.yaml").is_file():
        raise DomainError("not_found", f"no model version {version!r}")
    return path


def prelabel_run_create(*, project: Project, model_version: str | None = None,
                        images: Sequence[Image] | None = None, actor: Any = None,
                        enqueue: bool = True) -> PrelabelRun:
    version = model_version or promoted_version(project)
    if not version:
        raise DomainError("not_found", f"no model version given and project {project.slug!r} "
                          "has none promoted")
    if ModelVersion.objects.filter(name=version).exclude(project=project).exists():
        raise DomainError("invalid", f"model version {version!r} belongs to another project")
    version_files(version)
    run = PrelabelRun.objects.create(
        project=project, model_version=version,
        image_scope=sorted(i.pseudo_id for i in images) if images is not None else [],
        created_by=actor if getattr(actor, "is_authenticated", False) else None)
    audit_record(action="prelabel.run_create", actor=actor, project=project, target=run,
                 detail={"model_version": version})
    runs.run_created(run, dispatch=enqueue)
    return run


def _prediction(image: Image, version: str, det: Any, names: list[str]) -> Prediction:
    from training.uncertainty import image_uncertainty

    sx = image.width / det.image_size[1]
    sy = image.height / det.image_size[0]
    boxes = [
        {"label": names[int(c)], "box": [b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy],
         "score": float(s), "probs": p}
        for b, c, s, p in zip(det.boxes.tolist(), det.classes.tolist(),
                              det.scores.tolist(), det.probs.tolist(), strict=True)
    ]
    return Prediction(image=image, model_version=version, boxes=boxes,
                      score=float(det.scores.mean()) if len(boxes) else 0.0,
                      uncertainty=image_uncertainty(det.probs), updated_at=timezone.now())


def _store(predictions: list[Prediction]) -> None:
    """One statement per batch; a re-run of the same version updates its rows."""
    Prediction.objects.bulk_create(
        predictions, update_conflicts=True, unique_fields=["image", "model_version"],
        update_fields=["boxes", "score", "uncertainty", "tta", "features", "image_scores",
                       "masks", "updated_at"])


def _findings_classifier(project: Project) -> tuple[str, Any] | None:
    """(version name, Classifier) of the project's promoted classifier, whose
    probabilities go with every pre-label (and gate its boxes when the project's
    two-stage switch is on); None when no classifier is promoted."""
    loaded = promoted_classifier(project)
    if loaded is None:
        return None
    version, model = loaded
    if project.two_stage and NO_FINDING not in model.class_names:
        raise DomainError("invalid_model", f"classifier {version.name} has no "
                          f"{NO_FINDING!r} output to gate with")
    return version.name, model


def _apply_findings(project: Project, classifier: tuple[str, Any], arrays: list,
                    preds: list[Prediction]) -> None:
    """Keep the classifier's probabilities with each prediction; with the two-stage
    switch on, rescale (and, on films called normal, drop) its boxes by P(normal)."""
    from training.two_stage import gate_boxes

    name, model = classifier
    probs = model.predict(arrays)
    nf = model.class_names.index(NO_FINDING) if NO_FINDING in model.class_names else None
    for pred, row, array in zip(preds, probs.tolist(), arrays, strict=True):
        pred.image_scores = {"classifier": name,
                             "probs": dict(zip(model.class_names, row, strict=True)),
                             "p_normal": row[nf] if nf is not None else None, "gated": False}
        if project.explanation_prelabels:
            pred.image_scores["explanations"] = _explanations(model, array, row)
        if not project.two_stage:
            continue
        pred.boxes, g = gate_boxes(pred.boxes, row[nf], project.two_stage_threshold,
                                   rescale=project.two_stage_rescale)
        pred.score = float(np.mean([b["score"] for b in pred.boxes])) if pred.boxes else 0.0
        pred.image_scores.update(gated=True, called_normal=g.called_normal,
                                 threshold=project.two_stage_threshold,
                                 rescaled=project.two_stage_rescale)


#: Findings per film whose Grad-CAM region goes with the pre-label (the most probable).
EXPLAINED_FINDINGS = 3


def _explanations(model: Any, display: np.ndarray, probs: list[float]) -> dict[str, Any]:
    """Where the classifier looked for each finding it calls (probability >= the
    pre-selection point, at most ``EXPLAINED_FINDINGS``): the Grad-CAM map's largest
    region above half its peak, stored at the display size."""
    from training.explain import cam_region, classifier_cams

    called = sorted(((p, n) for n, p in zip(model.class_names, probs, strict=True)
                     if n != NO_FINDING and p >= FINDING_PRESELECT), reverse=True)
    out = {}
    for p, n in called[:EXPLAINED_FINDINGS]:
        region = cam_region(classifier_cams(model, [display], n)[0])
        path, digest, area = mask_write(region)
        out[n] = {"path": path, "sha256": digest, "area": area, "p": float(p)}
    return out


#: Loaded model versions of this worker process (a version's files never change).
_DETECTORS: dict[tuple[str, float, bool], Any] = {}


def _detector(version: str, batch_size: int) -> Any:
    from training.detector import Detector

    path = str(version_files(version))
    thresh, amp = settings.PRELABEL_SCORE_THRESH, settings.PRELABEL_AMP
    if (path, thresh, amp) not in _DETECTORS:
        _DETECTORS.clear()  # keep one model in memory

        def configure(cfg: Any) -> None:
            cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = thresh

        # the registry's digest when the version is registered, else the folder's manifest
        expected = ModelVersion.objects.filter(name=version).values_list(  # names are unique
            "sha256", flat=True).first()
        _DETECTORS[(path, thresh, amp)] = Detector.from_dir(path, expected_sha256=expected,
                                                            configure=configure, amp=amp)
    detector = _DETECTORS[(path, thresh, amp)]
    detector.batch_size = batch_size
    return detector


#: Scores a pre-labelling pass computes only when an AL round asks for them.
MODEL_SCORE_KINDS = frozenset({"tta", "features", "stability", "committee"})
#: Earlier versions of the project that join the scored version in a committee.
COMMITTEE_EARLIER = 2


def _committee(version: str) -> list[Any]:
    """Detectors of up to ``COMMITTEE_EARLIER`` earlier versions of the same project,
    newest first, loaded for one run (verified against the registry's digests)."""
    from training.detector import Detector

    current = ModelVersion.objects.filter(name=version).first()
    if current is None:
        return []
    earlier = (ModelVersion.objects.filter(project=current.project_id, kind="detector",
                                           created_at__lt=current.created_at)
               .order_by("-created_at")[:COMMITTEE_EARLIER])
    thresh = settings.PRELABEL_SCORE_THRESH

    def configure(cfg: Any) -> None:
        cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = thresh

    # the same precision as the scored version: disagreement is the models', not AMP's
    return [Detector.from_dir(version_files(v.name), expected_sha256=v.sha256,
                              configure=configure, amp=settings.PRELABEL_AMP)
            for v in earlier]


def _al_scores(detector: Any, arrays: list[np.ndarray], dets: list[Any],
               preds: list[Prediction], kinds: frozenset[str], committee: list[Any]) -> None:
    """The model-based AL scores ``kinds`` asks for (TTA and features go together)."""
    from training.active_learning import (
        COMMITTEE_KEY,
        STABILITY_KEY,
        committee_disagreements,
        localisation_instabilities,
        pooled_features,
        tta_disagreements,
    )

    if kinds & {"tta", "features"}:
        tta = tta_disagreements(detector, arrays)
        feats = pooled_features(detector, arrays)
        for pred, t, f in zip(preds, tta.tolist(), feats.tolist(), strict=True):
            pred.tta, pred.features = float(t), f
    if "stability" in kinds:
        for pred, v in zip(preds, localisation_instabilities(detector, arrays), strict=True):
            pred.uncertainty[STABILITY_KEY] = float(v)
    if "committee" in kinds:
        members = [dets] + [m.predict(arrays) for m in committee]
        for pred, v in zip(preds, committee_disagreements(members), strict=True):
            pred.uncertainty[COMMITTEE_KEY] = float(v)


def prelabel_run_execute(*, run_id: int, progress: Progress | None = None,
                         batch_size: int | None = None,
                         al_scores: Sequence[str] = ()) -> PrelabelRun:
    """Claim the run and pre-label its images batch by batch.

    Heartbeats after every batch, where a cancel request stops it (CANCELLED, the
    batches stored so far kept).  Idempotent, so a lost run is re-queued and a
    transient error (``OSError``: a model or image file briefly unreadable) gives
    the run back for the task's retry (``services.runs``).  ``al_scores``: the
    model-based AL score kinds to compute as well (``MODEL_SCORE_KINDS``).
    """
    kinds = frozenset(al_scores)
    if kinds - MODEL_SCORE_KINDS:
        raise DomainError("invalid_params", "unknown AL score kinds",
                          detail=sorted(kinds - MODEL_SCORE_KINDS))
    def work(run: PrelabelRun) -> dict[str, Any]:
        return _execute(run, progress, batch_size, kinds)

    return runs.run_execute(PrelabelRun, run_id, work)


def _execute(run: PrelabelRun, progress: Progress | None, batch_size: int | None,
             al_scores: frozenset[str]) -> dict[str, Any]:
    project = run.project
    size = batch_size or settings.PRELABEL_BATCH_SIZE
    if ModelVersion.objects.filter(name=run.model_version,
                                   kind=ModelVersion.Kind.SEGMENTER).exists():
        return _execute_segmenter(run, progress, size)
    detector = _detector(run.model_version, size)
    qs = project.images.order_by("id")
    if run.image_scope:
        qs = qs.filter(pseudo_id__in=run.image_scope)
    images = list(qs)
    runs.run_heartbeat(run, total=len(images), done=0)
    names = detector.class_names
    committee = [m for m in (_committee(run.model_version) if "committee" in al_scores else [])
                 if m.class_names == names]  # other classes: indices would not line up
    classifier = _findings_classifier(project)
    for start in range(0, len(images), size):
        batch = images[start:start + size]
        arrays = [read_display(i) for i in batch]
        dets = detector.predict(arrays)
        preds = [_prediction(image, run.model_version, det, names)
                 for image, det in zip(batch, dets, strict=True)]
        if al_scores:
            _al_scores(detector, arrays, dets, preds, al_scores, committee)
        if classifier is not None:
            _apply_findings(project, classifier, arrays, preds)
        _store(preds)
        done = start + len(batch)
        runs.run_heartbeat(run, done=done)
        if progress:
            progress(done, len(images))
    return {}


#: Loaded segmenter of this worker process (one at a time).
_SEGMENTERS: dict[str, Any] = {}
#: A mask model's probability at which a pixel is pre-painted.
MASK_THRESHOLD = 0.5


def _segmenter(version: str) -> Any:
    from training.segmenter import Segmenter

    path = str(version_files(version))
    if path not in _SEGMENTERS:
        _SEGMENTERS.clear()
        expected = ModelVersion.objects.filter(name=version).values_list(
            "sha256", flat=True).first()
        _SEGMENTERS[path] = Segmenter.from_dir(path, expected_sha256=expected)
    return _SEGMENTERS[path]


def _execute_segmenter(run: PrelabelRun, progress: Progress | None,
                       size: int) -> dict[str, Any]:
    """A mask model's pass: per film, each class's mask (probability >= 0.5) stored at the
    display size, with its mean probability inside as the region's score."""
    model = _segmenter(run.model_version)
    qs = run.project.images.order_by("id")
    if run.image_scope:
        qs = qs.filter(pseudo_id__in=run.image_scope)
    images = list(qs)
    runs.run_heartbeat(run, total=len(images), done=0)
    for start in range(0, len(images), size):
        batch = images[start:start + size]
        probs = model.predict([read_display(i) for i in batch])
        preds = []
        for image, p in zip(batch, probs, strict=True):
            classes = {}
            for name, channel in zip(model.class_names, p, strict=True):
                mask = channel >= MASK_THRESHOLD
                path, digest, area = mask_write(mask)
                classes[name] = {"path": path, "sha256": digest, "area": area,
                                 "score": float(channel[mask].mean()) if area else 0.0}
            scores = [c["score"] for c in classes.values() if c["area"]]
            preds.append(Prediction(
                image=image, model_version=run.model_version, boxes=[],
                masks={"segmenter": run.model_version, "classes": classes},
                score=float(np.mean(scores)) if scores else 0.0, updated_at=timezone.now()))
        _store(preds)
        runs.run_heartbeat(run, done=start + len(batch))
        if progress:
            progress(start + len(batch), len(images))
    return {}


def prelabel_run_cancel(*, run: PrelabelRun, actor: Any = None) -> PrelabelRun:
    """Stop a pre-labelling run after its current batch (at once if still pending)."""
    run = runs.run_cancel(run)
    audit_record(action="prelabel.run_cancel", actor=actor, project=run.project, target=run)
    return run


def prelabel_run_push(*, run_id: int) -> int:
    """A finished pre-labelling shows its predictions in reading tasks that have none,
    where the project's switch allows it (pre-labels bias a read).  Label Studio being
    away is audited and the run stays done: the predictions are stored, a later run or
    push shows them.  How many tasks got one."""
    run = PrelabelRun.objects.select_related("project").get(pk=run_id)
    if not run.project.show_prelabels:
        return 0
    try:
        # the same lock as the assignments push: both give tasks their one pre-label
        with locks.exclusive(f"assignments-push:{run.project_id}"):
            pushed = prelabels_push(run.project, run.model_version)
    except DomainError as exc:
        logger.warning("prelabel run %s: predictions not pushed (%s)", run_id, exc.code)
        audit_record(action="prelabel.push_failed", project=run.project, target=run,
                     detail={"reason": exc.message})
        return 0
    PrelabelRun.objects.filter(pk=run_id).update(pushed=pushed)
    return pushed


def prelabels_push(project: Project, model_version: str) -> int:
    """Give reading tasks that show no pre-label yet this version's prediction (the
    handlers call it when a pre-labelling run is done and the project shows pre-labels)."""
    clients: dict[int, Any] = {}
    pushed = 0
    tasks = WorkspaceTask.objects.filter(workspace__project=project, workspace__kind="reading",
                                         prediction__isnull=True,
                                         mask_prediction__isnull=True).select_related(
                                             "image", "workspace")
    for task in tasks:
        pred = prelabel_for(task.image, model_version=model_version)
        if pred is None:
            continue
        # each workspace is its own organization: only its service user may write there
        client = clients.get(task.workspace_id) or clients.setdefault(
            task.workspace_id, ws_client(task.workspace))
        client.create_prediction(task.ls_task_id, pred["result"], pred["score"],
                                 pred["model_version"])
        WorkspaceTask.objects.filter(pk=task.pk).update(prediction=pred["prediction"],
                                                                 mask_prediction=pred["mask_prediction"])
        pushed += 1
    return pushed
