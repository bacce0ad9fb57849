"""Training runs: train the project's detector on its final labels, register the
model version, evaluate it on the gold set, promote it only when better.

* One training per project at a time (a conditional unique constraint on the
  run table: a second start is refused with ``conflict``).
* Training data: the final labels (adjudicated, else consensus) of every
  non-gold image that has one; "No finding" images stay in (they teach the
  model what normal looks like).  The split into train and validation is by
  patient, so no patient is on both sides.
* The model sees display derivatives, as readers and pre-labelling do: boxes are
  scaled from original to display pixels for training.
* One run lifecycle (``services.runs``): the run heartbeats every
  ``CXR_RUN_HEARTBEAT_SECONDS`` and with each progress report, and a cancel is
  honoured at the next one (CANCELLED, registry unchanged).  A crash marks the
  run FAILED with the reason; a lost worker (no heartbeat) is FAILED by the
  sweep, never re-run (``runs._fail_lost_training`` says why).  The version is
  evaluated on the gold set before it is registered, and registered, promoted
  if better and the run finished in one transaction: a run that does not end
  DONE leaves the registry unchanged.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction

from annotations import events
from annotations.consensus import ConsensusResult
from annotations.errors import DomainError
from annotations.formats.coco import write_coco
from annotations.formats.records import ImageRecord
from annotations.models import Image, ModelVersion, Project, TrainingRun
from annotations.services import runs, storage
from annotations.services.audit import audit_record
from annotations.services.classifier_training import train_classifier_model
from annotations.services.distributed_training import train_detector_distributed
from annotations.services.exports import project_taxonomy
from annotations.services.image_state import image_states
from annotations.services.labels import final_results
from annotations.services.model_registry import version_gold_report
from annotations.services.segmenter_training import train_segmenter_model
from training.params import training_params, world_size

logger = logging.getLogger(__name__)

#: Raised inside the training loop when an admin cancelled the run.
Cancelled = runs.RunCancelled


def training_run_create(*, project: Project, params: dict | None = None, actor: Any = None,
                        enqueue: bool = True) -> TrainingRun:
    merged = training_params(params)  # typed, bounded, unknown keys refused
    if merged["task"] == "detector" and \
            not project.label_classes.filter(image_level=False).exists():
        raise DomainError("no_box_classes", "the detector trains on boxes and this project's "
                          "taxonomy has only image-level classes")
    if merged["task"] == "segmenter" and not project.mask_classes.exists():
        raise DomainError("no_mask_classes", "the segmenter trains on masks and this project "
                          "has no mask classes", status=400)
    try:
        with transaction.atomic():
            run = TrainingRun.objects.create(project=project, params=merged, created_by=(
                actor if getattr(actor, "is_authenticated", False) else None))
    except IntegrityError as exc:
        raise DomainError("conflict", "a training run of this project is already active") \
            from exc
    audit_record(action="training.run_create", actor=actor, project=project, target=run,
                 detail={"params": merged})
    runs.run_created(run, dispatch=enqueue)
    return run


def training_run_cancel(*, run: TrainingRun, actor: Any = None) -> TrainingRun:
    """Pending: cancelled at once.  Running: stopped at its next heartbeat."""
    run = runs.run_cancel(run)
    audit_record(action="training.run_cancel", actor=actor, project=run.project, target=run)
    return run


def split_by_patient(images: list[Image], val_fraction: float) -> tuple[list, list]:
    """Deterministic patient-level split: a patient's images all go one way.

    The bucket follows the patient's pseudonym, so which patients are held out depends
    on the installation's pseudonym key.  With few patients every one of them can land
    in the held-out side; a split that would leave nothing to train on is dropped
    (everything trains, nothing is held out) rather than failing a project that does
    have final labels.
    """
    def bucket(image: Image) -> float:
        digest = hashlib.sha256(image.study.patient_pseudo_id.encode()).digest()
        return int.from_bytes(digest[:4], "big") / 2**32

    train = [i for i in images if bucket(i) >= val_fraction]
    val = [i for i in images if bucket(i) < val_fraction]
    if not train:
        return list(images), []
    return train, val


def _display_scaled(image: Image, res: ConsensusResult) -> ConsensusResult:
    sx, sy = image.display_width / image.width, image.display_height / image.height
    return ConsensusResult(boxes=res.boxes * [sx, sy, sx, sy], classes=res.classes,
                           scores=res.scores, support=res.support,
                           image_labels=res.image_labels, meta={})


def write_training_coco(project: Project, images: list[Image], labels: dict[str, ConsensusResult],
                        out: Path) -> Path:
    """COCO over display images (file names are their media keys)."""
    records = [ImageRecord(i.pseudo_id, i.display_path, i.display_width, i.display_height)
               for i in images]
    scaled = {i.pseudo_id: _display_scaled(i, labels[i.pseudo_id]) for i in images}
    path = out / "train.json"
    path.write_text(write_coco(records, scaled, project_taxonomy(project)))
    return path


def _next_name(project: Project) -> str:
    n = ModelVersion.objects.filter(project=project).count() + 1
    return f"{project.slug}-v{n}"


def training_run_execute(*, run_id: int) -> TrainingRun:
    """Claim the run and train; any error fails it (a training is not retried)."""
    def work(run: TrainingRun) -> None:
        folder = storage.training_dir(f"train-{run.pk}-")
        try:
            _train(run, folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    return runs.run_execute(TrainingRun, run_id, work, retry_on=())


def _training_images(run: TrainingRun) -> tuple[list[Image], list[Image], dict]:
    """(train, held out, final labels): the final, non-gold images, split by patient."""
    project = run.project
    labels = final_results(project)
    images = list(Image.objects.filter(project=project, is_gold=False,
                                       pseudo_id__in=list(labels)).select_related("study"))
    # only finished reading: a consensus over some of an image's reads is provisional
    states = image_states(project)
    images = [i for i in images if states.get(i.pk) == "final"]
    train, val = split_by_patient(images, float(run.params["val_fraction"]))
    if not train:
        raise DomainError("no_training_data", "no image outside the gold set has a final label")
    return train, val, labels


def _train(run: TrainingRun, work: Path) -> ModelVersion:
    if run.params.get("task") == "classifier":
        return _train_classifier(run)
    if run.params.get("task") == "segmenter":
        return _train_segmenter(run)
    from training.config import build_config
    from training.datasets import register_coco_dataset
    from training.detector import save_model_version
    from training.trainer import CXRTrainer

    project, params = run.project, run.params
    train, val, labels = _training_images(run)
    runs.run_heartbeat(run)
    dataset = f"cxr-train-{run.pk}"
    coco = write_training_coco(project, train, labels, work)
    image_root = storage.media_tree([i.display_path for i in train], work / "images")
    register_coco_dataset(dataset, coco, image_root)
    names = [c.name for c in project_taxonomy(project) if not c.image_level]
    parent = ModelVersion.objects.filter(project=project, promoted=True,
                                         kind=ModelVersion.Kind.DETECTOR).first()
    cfg = build_config(len(names), preset=params["preset"], class_names=names,
                       weights=settings.INITIAL_WEIGHTS or None)
    cfg.DATASETS.TRAIN = (dataset,)
    cfg.DATASETS.TEST = ()
    cfg.OUTPUT_DIR = str(work / "out")
    cfg.SOLVER.MAX_ITER = int(params["max_iter"])
    cfg.SOLVER.IMS_PER_BATCH = int(params["ims_per_batch"])
    cfg.SOLVER.CHECKPOINT_PERIOD = 10**9  # versions are published below, not checkpoints
    # float16 autocast on a GPU (Detectron2's AMPTrainer); the CPU path stays float32
    cfg.SOLVER.AMP.ENABLED = settings.TRAIN_AMP and str(cfg.MODEL.DEVICE).startswith("cuda")
    if params.get("base_lr"):
        cfg.SOLVER.BASE_LR = float(params["base_lr"])
    cfg.CXR.SOFT_LABELS = bool(params.get("soft_labels", False))
    if params.get("seed") is not None:  # sampler order, augmentations and initialisation
        from detectron2.utils.env import seed_all_rng

        cfg.SEED = int(params["seed"])
        seed_all_rng(cfg.SEED)
    # class imbalance: images with rare classes are repeated
    cfg.DATALOADER.SAMPLER_TRAIN = "RepeatFactorTrainingSampler"
    cfg.DATALOADER.REPEAT_THRESHOLD = 0.3
    cfg.DATALOADER.NUM_WORKERS = 0

    world = world_size(params)
    # the run's progress row, written by both hooks; the world size is recorded with it
    state: dict[str, Any] = {"world_size": world}
    if world > 1:  # several processes: the same config, trained over torch.distributed
        final, digest = train_detector_distributed(
            run, cfg, state, dataset=dataset, coco=coco, image_root=image_root, work=work)

        def save(folder: Path) -> str:
            shutil.copytree(final, folder, dirs_exist_ok=True)
            return digest
        return _publish_detector(run, state, cfg, save, parent=parent, train=train, val=val,
                                 labels=labels)

    def report(progress) -> None:
        state.update(iteration=progress.iteration, max_iter=progress.max_iter,
                     fraction=progress.fraction, eta_seconds=progress.eta_seconds,
                     losses={k: float(v) for k, v in progress.losses.items()},
                     phase="training")
        # the loss curve: one point per report (about 50 a run), total of the losses
        state.setdefault("loss_history", []).append(
            [progress.iteration, float(sum(state["losses"].values()))])
        runs.run_heartbeat(run, progress=state, best_effort=True)  # raises: cancelled, lost

    def publish(iteration: int, model) -> None:
        """The latest intermediate checkpoint, kept with the run (inspection, resume)."""
        key = f"runs/{run.pk}/last"
        folder = storage.folder_for_write(storage.MODELS, key)
        _, digest = save_model_version(model, cfg, folder)
        storage.folder_publish(storage.MODELS, key, folder)
        state["checkpoint"] = {"iteration": iteration, "path": key, "sha256": digest}
        runs.run_heartbeat(run, progress=state, best_effort=True)

    trainer = CXRTrainer(cfg, progress=report, progress_period=max(1, cfg.SOLVER.MAX_ITER // 50),
                         publish=publish, publish_period=int(params["checkpoint_period"]),
                         heartbeat=lambda: runs.run_heartbeat(run, best_effort=True),
                         heartbeat_seconds=settings.RUN_HEARTBEAT_SECONDS)
    trainer.resume_or_load(resume=False)
    trainer.train()
    return _publish_detector(run, state, cfg,
                             lambda folder: save_model_version(trainer.model, cfg, folder)[1],
                             parent=parent, train=train, val=val, labels=labels)


def _publish_detector(run: TrainingRun, state: dict[str, Any], cfg, save, *, parent,
                      train: list[Image], val: list[Image], labels: dict) -> ModelVersion:
    """Store the trained detector as the project's next version (``save(folder)`` writes
    its files and returns their digest), evaluate, register and promote it."""
    project = run.project
    state["phase"] = "evaluating"
    runs.run_heartbeat(run, progress=state)
    name = _next_name(project)
    folder = storage.folder_for_write(storage.MODELS, name)
    digest = save(folder)
    storage.folder_publish(storage.MODELS, name, folder)
    try:
        return _register(run, state, ModelVersion(
            project=project, name=name, sha256=digest, config=cfg.dump(), parent=parent,
            training_run=run, train_images=sorted(i.pseudo_id for i in train),
            label_sources={i.pseudo_id: labels[i.pseudo_id].meta for i in train}),
            detail={"images": len(train), "validation": len(val),
                    "world_size": state.get("world_size", 1)})
    except BaseException:
        # not registered: no version folder either (a version that committed keeps its files)
        if not ModelVersion.objects.filter(name=name).exists():
            storage.folder_delete(storage.MODELS, name)
        raise


def _loss_report(run: TrainingRun, state: dict[str, Any], loss: str):
    """The heartbeat of a one-loss training (classifier, segmenter): progress, the loss
    curve, and a stop when the run was cancelled or lost (the heartbeat raises)."""
    def report(progress) -> None:
        state.update(iteration=progress.iteration, max_iter=progress.max_iter,
                     fraction=progress.fraction, eta_seconds=progress.eta_seconds,
                     losses={loss: progress.loss}, phase="training")
        state.setdefault("loss_history", []).append([progress.iteration, progress.loss])
        runs.run_heartbeat(run, progress=state, best_effort=True)
    return report


def _publish(run: TrainingRun, state: dict[str, Any], *, kind: str, model, cfg, save,
             images: list[Image], val: list[Image], label_sources: dict) -> ModelVersion:
    """Save a trained classifier or segmenter as the project's next version, evaluate,
    register and promote it like a detector; a version that does not register leaves no
    folder behind."""
    project = run.project
    state["phase"] = "evaluating"
    runs.run_heartbeat(run, progress=state)
    name = _next_name(project)
    folder = storage.folder_for_write(storage.MODELS, name)
    _, digest = save(model, cfg, folder)
    storage.folder_publish(storage.MODELS, name, folder)
    parent = ModelVersion.objects.filter(project=project, promoted=True, kind=kind).first()
    try:
        return _register(run, state, ModelVersion(
            project=project, name=name, kind=kind, sha256=digest, config=cfg.dump(),
            parent=parent, training_run=run, train_images=sorted(i.pseudo_id for i in images),
            label_sources=label_sources),
            detail={"images": len(images), "validation": len(val), "kind": kind})
    except BaseException:
        if not ModelVersion.objects.filter(name=name).exists():
            storage.folder_delete(storage.MODELS, name)
        raise


def _train_classifier(run: TrainingRun) -> ModelVersion:
    """The image-level classifier: trained in memory on the display derivatives."""
    from training.classifier import save_classifier

    project, params = run.project, run.params
    train, val, labels = _training_images(run)
    runs.run_heartbeat(run)
    state: dict[str, Any] = {}
    model, cfg = train_classifier_model(params=params, project=project, images=train,
                                        labels=labels,
                                        report=_loss_report(run, state, "loss_bce"))
    return _publish(run, state, kind=ModelVersion.Kind.CLASSIFIER, model=model, cfg=cfg,
                    save=save_classifier, images=train, val=val,
                    label_sources={i.pseudo_id: labels[i.pseudo_id].meta for i in train})


def _train_segmenter(run: TrainingRun) -> ModelVersion:
    """The mask model: trained on the final masks of the training images."""
    from training.segmenter import save_segmenter

    project, params = run.project, run.params
    train, val, _labels = _training_images(run)
    runs.run_heartbeat(run)
    state: dict[str, Any] = {}
    model, cfg, used = train_segmenter_model(params=params, project=project, images=train,
                                             report=_loss_report(run, state, "loss_dice_ce"))
    return _publish(run, state, kind=ModelVersion.Kind.SEGMENTER, model=model, cfg=cfg,
                    save=save_segmenter, images=used, val=val, label_sources={})


def _register(run: TrainingRun, state: dict[str, Any], version: ModelVersion,
              detail: dict[str, Any]) -> ModelVersion:
    """Evaluate the trained version on the gold set, then register it and finish the
    run in one transaction with its consequences (``ModelTrained``: the handlers promote
    it if better), so nothing of it stands if the run was lost."""
    try:
        version.metrics, skipped = version_gold_report(version=version), None
    except DomainError as exc:
        skipped = exc.message
    runs.run_heartbeat(run)  # still this attempt's, and not cancelled meanwhile
    with transaction.atomic():
        version.save()
        runs.run_finish(run, model_version=version, progress=state)
        audit_record(action="training.version_create", project=version.project,
                     target=version, detail=detail)
        if skipped is not None:
            audit_record(action="model.evaluate_skipped", project=version.project,
                         target=version, detail={"reason": skipped})
        events.emit(events.ModelTrained(version_id=version.pk, project_id=version.project_id,
                                        evaluated=skipped is None))
    return version
