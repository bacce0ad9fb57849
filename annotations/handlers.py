"""The pipeline: what happens after each domain event, in one place.

Read top to bottom, this module is the chain from reads to models::

    assignments created   -> tasks pushed to the readers' Label Studio workspaces
    webhook stored        -> processed by a worker (the read is recorded)
    reads completed       -> consensus run
    run created           -> its task queued (consensus, prelabel, training)
    consensus done        -> adjudication routed inside the run; retraining if due
    model trained         -> promoted if better on the gold set (evaluated in the run)
    model promoted        -> pre-labelling of the AL pool (and of reading tasks that
                             show no pre-label, where the project shows them)
    pre-labelling done    -> predictions pushed to the reading tasks (a default worker)
    batch created         -> each staged file ingested by a worker

It is the only module that enqueues Celery tasks (``task_enqueue``): services emit
events (``annotations.events``) and never import tasks or each other's workflows,
which keeps the service modules acyclic.  Handlers run synchronously inside the
emitter's transaction (a reaction that writes commits with its cause); a task is
queued ``on_commit`` and a lost message is found again by the runs sweep.

Loaded by ``AnnotationsConfig.ready``, so every Django process (web, workers, beat,
management commands, tests) reacts the same way.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import current_app
from django.db import transaction

from annotations import events as ev
from annotations.errors import DomainError
from annotations.models import ConsensusRun, ModelVersion, Prediction, Project, RunStatus
from annotations.services import active_learning, consensus, model_registry, prelabeling
from annotations.services.audit import audit_record

logger = logging.getLogger(__name__)

#: The one dispatch table: run kind -> its task in ``annotations.tasks``.
RUN_TASKS = {"consensus": "consensus_run_execute_task", "prelabel": "gpu_prelabel_task",
             "training": "gpu_training_task", "reconcile": "reconcile_run_task",
             "al_round": "gpu_al_round_task"}


def task_enqueue(name: str, **kwargs: Any) -> None:
    """Queue ``annotations.tasks.<name>`` once the current transaction commits.

    Tasks are found by name in Celery's registry, so this module need not import the
    tasks module (which imports services); Celery's autodiscovery fills the registry
    in a process that has not loaded the tasks yet.
    """
    full = f"annotations.tasks.{name}"
    registry = current_app.tasks
    if full not in registry:
        current_app.loader.import_default_modules()
    task = registry[full]
    # robust: a broker that is briefly away must not fail what already committed (Django
    # logs it; the runs sweep queues a pending run again, the webhook sweep a pending
    # event).  Eager (in-process) execution keeps the task's own error for its caller.
    transaction.on_commit(lambda: task.delay(**kwargs),
                          robust=not current_app.conf.task_always_eager)


# --- reading ------------------------------------------------------------------------


@ev.subscribe(ev.AssignmentsCreated)
def push_new_assignments(event: ev.AssignmentsCreated) -> None:
    """Projects that read in Label Studio get new tasks at once (a worker pushes them;
    when Label Studio is down the admin's Push, or the next assignment, catches up)."""
    if event.image_ids and Project.objects.filter(
            pk=event.project_id, workspaces__kind="reading").exists():
        task_enqueue("assignments_push_task", project_id=event.project_id)


@ev.subscribe(ev.ExplanationsEnabled)
def explanation_control_for_workspaces(event: ev.ExplanationsEnabled) -> None:
    if Project.objects.filter(pk=event.project_id, workspaces__isnull=False).exists():
        task_enqueue("workspaces_config_update_task", project_id=event.project_id)


@ev.subscribe(ev.WebhookStored)
def process_webhook(event: ev.WebhookStored) -> None:
    task_enqueue("webhook_event_process_task", event_id=event.event_id)


@ev.subscribe(ev.ReadsCompleted)
def consensus_for_completed_reads(event: ev.ReadsCompleted) -> None:
    """An image's k reads are in: its consensus follows at once (a queued run with the
    same scope that has not started yet will see this read too, so none is added)."""
    project = Project.objects.get(pk=event.project_id)
    images = list(project.images.filter(pk__in=event.image_ids))
    consensus.consensus_run_create(project=project, images=images,
                                   trigger=ConsensusRun.Trigger.READS_COMPLETE)


# --- runs -----------------------------------------------------------------------------


@ev.subscribe(ev.RunCreated, ev.RunRequeued)
def queue_run(event: ev.RunCreated | ev.RunRequeued) -> None:
    if getattr(event, "dispatch", True):
        task_enqueue(RUN_TASKS[event.kind], run_id=event.run_id)


@ev.subscribe(ev.RunFinished)
def after_run(event: ev.RunFinished) -> None:
    if event.status != RunStatus.DONE:
        return
    if event.kind == "consensus":
        _retrain_if_due(event.project_id)
    elif event.kind == "prelabel":
        # Label Studio calls on the default queue, not on the one GPU worker
        task_enqueue("prelabels_push_task", run_id=event.run_id)


def _retrain_if_due(project_id: int) -> None:
    """New final labels may make a retraining due (``project.auto_retrain_after``)."""
    project = Project.objects.get(pk=project_id)
    try:
        active_learning.retrain_if_due(project)
    except DomainError as exc:  # e.g. a training started meanwhile: not consensus's failure
        audit_record(action="training.auto_start_skipped", project=project,
                     detail={"reason": exc.message})


# --- models ---------------------------------------------------------------------------


@ev.subscribe(ev.ModelTrained)
def promote_if_better(event: ev.ModelTrained) -> None:
    """Evaluated on the gold set inside the training run; promoted only when better."""
    if event.evaluated:
        model_registry.version_promote_if_better(
            version=ModelVersion.objects.get(pk=event.version_id))


@ev.subscribe(ev.ModelPromoted)
def prelabel_with_promoted(event: ev.ModelPromoted) -> None:
    """The promoted model scores the active-learning pool (unassigned, non-gold images:
    the next round chooses from fresh scores) and, where the project shows pre-labels,
    the reading tasks that show none yet; the push follows when the run is done."""
    project = Project.objects.get(pk=event.project_id)
    version = ModelVersion.objects.get(pk=event.version_id)
    if version.kind == ModelVersion.Kind.CLASSIFIER:
        return  # its probabilities ride with the detector's pre-labels
    if project.prelabel_runs.filter(model_version=version.name,
                                    status__in=(RunStatus.PENDING, RunStatus.RUNNING)).exists():
        return  # a rollback back and forth: that run is on its way
    unshown = project.images.filter(workspace_tasks__workspace__kind="reading",
                                    workspace_tasks__prediction__isnull=True,
                                    workspace_tasks__mask_prediction__isnull=True)
    if version.kind == ModelVersion.Kind.SEGMENTER:
        # a mask model pre-paints reading tasks (AL scores come from the detector)
        scope = set(unshown) if project.show_prelabels else set()
    else:
        scope = set(active_learning.pool_images(project))
        if project.show_prelabels:
            scope |= set(unshown)
    done = set(Prediction.objects.filter(image__in=scope, model_version=version.name)
               .values_list("image_id", flat=True))
    scope = {i for i in scope if i.pk not in done}  # a version's predictions never change
    if not scope:
        return
    try:
        prelabeling.prelabel_run_create(project=project, model_version=version.name,
                                        images=sorted(scope, key=lambda i: i.pk))
    except DomainError as exc:  # e.g. the version's files are gone: promotion stands
        audit_record(action="prelabel.auto_start_skipped", project=project, target=version,
                     detail={"reason": exc.message})


# --- ingest ---------------------------------------------------------------------------


@ev.subscribe(ev.BatchCreated, ev.IngestItemsRequeued)
def ingest_files(event: ev.BatchCreated | ev.IngestItemsRequeued) -> None:
    if getattr(event, "dispatch", True):
        for item_id in event.item_ids:
            task_enqueue("ingest_file", item_id=item_id)
