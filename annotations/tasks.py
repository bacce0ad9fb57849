"""Celery tasks: thin wrappers over services.  Ids in, nothing returned.

Transient errors (database or broker hiccups) are retried with exponential
backoff; after the last retry the item or run is marked FAILED with the reason.
Runs (consensus, pre-label, training) share one base task, ``RunTask``; their
lifecycle is ``annotations.services.runs`` (claim, heartbeat, finish, sweep).
"""

from __future__ import annotations

import logging

from celery import Task, shared_task
from django.db import IntegrityError

from annotations.errors import DomainError
from annotations.models import Project, ReconcileRun
from annotations.services import (
    active_learning,
    consensus,
    ingest,
    label_studio_sync,
    prelabeling,
    quarantine,
    runs,
    training,
    webhooks,
)
from annotations.services.runs import TRANSIENT

logger = logging.getLogger(__name__)


class IngestTask(Task):
    def on_failure(self, exc, task_id, args, kwargs, einfo):  # noqa: D401 - Celery hook
        item_id = kwargs.get("item_id") if kwargs else (args[0] if args else None)
        if item_id is not None:
            ingest.ingest_item_fail(item_id=item_id, reason=type(exc).__name__)


@shared_task(
    base=IngestTask, name="annotations.tasks.ingest_file", autoretry_for=TRANSIENT,
    retry_backoff=2, retry_backoff_max=60, max_retries=5, acks_late=True,
)
def ingest_file(item_id: int) -> None:
    ingest.ingest_item_process(item_id=item_id)


class RunTask(Task):
    """Base of every run's task (``run_kind`` names the run model, the task takes
    ``run_id``).  Its failure path marks the run FAILED with the reason: an error
    the service did not record itself, or a transient one after the last retry.
    A guarded transition, so a run that finished meanwhile stays as it is."""

    run_kind = ""

    def on_failure(self, exc, task_id, args, kwargs, einfo):  # noqa: D401 - Celery hook
        run_id = (kwargs or {}).get("run_id", args[0] if args else None)
        if run_id is not None:
            runs.run_fail(self.run_kind, run_id,
                          reason=f"task failed: {type(exc).__name__}: {exc}")


@shared_task(base=RunTask, run_kind="consensus",
             name="annotations.tasks.consensus_run_execute_task",
             autoretry_for=TRANSIENT, retry_backoff=2, max_retries=5, acks_late=True)
def consensus_run_execute_task(run_id: int) -> None:
    consensus.consensus_run_execute(run_id=run_id)


@shared_task(name="annotations.tasks.webhook_event_process_task",
             autoretry_for=(*TRANSIENT, IntegrityError), retry_backoff=1, max_retries=8,
             acks_late=True)
def webhook_event_process_task(event_id: int) -> None:
    webhooks.webhook_event_process(event_id=event_id)


@shared_task(name="annotations.tasks.label_studio_reconcile_task", acks_late=True)
def label_studio_reconcile_task() -> None:
    """Periodic (Celery beat): re-queue webhook events still pending, then one
    reconcile pass (a run: its record says what it repaired and what failed)."""
    webhooks.webhook_events_sweep()
    run = label_studio_sync.reconcile_run_create(
        trigger=ReconcileRun.Trigger.SCHEDULE, dispatch=False)
    label_studio_sync.reconcile_run_execute(run_id=run.pk)


@shared_task(base=RunTask, run_kind="reconcile", name="annotations.tasks.reconcile_run_task",
             autoretry_for=TRANSIENT, retry_backoff=5, max_retries=3, acks_late=True)
def reconcile_run_task(run_id: int) -> None:
    label_studio_sync.reconcile_run_execute(run_id=run_id)


@shared_task(name="annotations.tasks.quarantine_purge_task", acks_late=True)
def quarantine_purge_task() -> None:
    """Daily (Celery beat): delete quarantined originals past their retention."""
    quarantine.quarantine_purge()


@shared_task(name="annotations.tasks.runs_sweep_task", acks_late=True)
def runs_sweep_task() -> None:
    """Every minute (Celery beat): fail or re-queue runs whose heartbeat stopped."""
    runs.runs_sweep()


@shared_task(base=RunTask, run_kind="prelabel", name="annotations.tasks.gpu_prelabel_task",
             autoretry_for=TRANSIENT, retry_backoff=5, max_retries=3, acks_late=True)
def gpu_prelabel_task(run_id: int) -> None:
    prelabeling.prelabel_run_execute(run_id=run_id)


@shared_task(base=RunTask, run_kind="training", name="annotations.tasks.gpu_training_task",
             acks_late=True)
def gpu_training_task(run_id: int) -> None:
    training.training_run_execute(run_id=run_id)


@shared_task(name="annotations.tasks.workspaces_config_update_task", autoretry_for=TRANSIENT,
             retry_backoff=2, max_retries=5, acks_late=True)
def workspaces_config_update_task(project_id: int) -> None:
    """The project's labeling config, as its settings now call for, in every workspace."""
    try:
        label_studio_sync.workspaces_config_update(Project.objects.get(pk=project_id))
    except DomainError as exc:
        logger.warning("project %s: workspace configs not updated (%s)", project_id, exc.code)


@shared_task(name="annotations.tasks.assignments_push_task", autoretry_for=TRANSIENT,
             retry_backoff=2, max_retries=5, acks_late=True)
def assignments_push_task(project_id: int) -> None:
    """New assignments into the readers' Label Studio workspaces.  Label Studio being
    away is logged, not retried forever: the admin's Push (or the next assignment)
    puts every task that is still missing."""
    try:
        label_studio_sync.assignments_push(Project.objects.get(pk=project_id))
    except DomainError as exc:
        logger.warning("project %s: tasks not pushed to Label Studio (%s)", project_id,
                       exc.code)


@shared_task(name="annotations.tasks.prelabels_push_task", autoretry_for=TRANSIENT,
             retry_backoff=2, max_retries=5, acks_late=True)
def prelabels_push_task(run_id: int) -> None:
    prelabeling.prelabel_run_push(run_id=run_id)


@shared_task(base=RunTask, run_kind="al_round", name="annotations.tasks.gpu_al_round_task",
             autoretry_for=TRANSIENT, retry_backoff=5, max_retries=3, acks_late=True)
def gpu_al_round_task(run_id: int) -> None:
    active_learning.al_round_execute(run_id=run_id)
