"""One lifecycle for every background run: consensus, pre-labelling, training and
ingest batches (``annotations.models.Run``).

Transitions, each one guarded write (``select_for_update`` or a conditional
``UPDATE``), so two workers racing for a run cannot both win and a finished run
never goes back::

    pending --claim--> running --finish--> done | cancelled
       |                  |  \\--fail----> failed
       |                  \\--release--> pending      (transient error: a retry takes it)
       \\--fail / cancel--> failed | cancelled
    running, heartbeat stale --claim--> running      (re-claim: attempts + 1)

``attempts`` is the fencing token of the current claim: an attempt that was
overtaken (its run re-claimed, or failed by the sweep) gets ``RunLost`` from its
next heartbeat or finish, and stops without writing.

Liveness: the running attempt heartbeats (``run_heartbeat``); ``runs_sweep``
(Celery beat, or ``manage.py sweep_runs``) acts on running runs whose heartbeat
stopped longer than their kind's timeout (``settings.RUN_TIMEOUTS``) ago:

* consensus and pre-labelling are re-queued (up to ``RUN_MAX_ATTEMPTS`` claims,
  then FAILED): both are idempotent.  A consensus run stores everything in one
  transaction, so a killed attempt leaves nothing behind; pre-labelling upserts
  one prediction per image and version, so a repeat updates rows, never
  duplicates them.
* training is FAILED with reason "worker lost": see ``_fail_lost_training``.
* a reconcile pass is re-queued: reconciling twice changes nothing.
* an active-learning round is re-queued: its scoring upserts predictions and it
  selects and assigns in the one transaction that finishes it.
* an ingest batch has its pending files queued again (each file's task is
  idempotent: a file that is no longer pending is left alone), up to
  ``RUN_MAX_ATTEMPTS`` times; then those files are FAILED and the batch is done.

Pending runs whose message may have been lost (not claimed ``RUN_PENDING_TIMEOUT``
after they were queued) are queued again; a duplicate message is harmless, since
only one claim can win.

Runs never enqueue anything themselves: creating, re-queueing and finishing a run
emit domain events (``RunCreated``, ``RunRequeued``, ``IngestItemsRequeued``,
``RunFinished``) and ``annotations.handlers`` queues the tasks and reacts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import Exists, OuterRef, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from annotations import events
from annotations.errors import DomainError
from annotations.models import (
    ActiveLearningRound,
    ConsensusRun,
    IngestBatch,
    IngestItem,
    PrelabelRun,
    ReconcileRun,
    Run,
    RunStatus,
    TrainingRun,
)

logger = logging.getLogger(__name__)

R = TypeVar("R", bound=Run)

#: Errors after which the same work may succeed if tried again (database or
#: broker hiccups, a file system that was briefly away).
TRANSIENT: tuple[type[BaseException], ...] = (OperationalError, InterfaceError, OSError)

ACTIVE = (RunStatus.PENDING, RunStatus.RUNNING)
FINISHED = (RunStatus.DONE, RunStatus.FAILED, RunStatus.CANCELLED)

MODELS: dict[str, type[Run]] = {
    m.KIND: m for m in (ConsensusRun, PrelabelRun, TrainingRun, IngestBatch, ReconcileRun,
                        ActiveLearningRound)}

#: Kinds whose lost runs the sweep queues again (re-running them is safe).
REQUEUE = {"consensus": True, "prelabel": True, "training": False, "ingest": True,
           "reconcile": True, "al_round": True}

_REASON_MAX = 2000


class RunCancelled(Exception):
    """Raised by ``run_heartbeat`` when a cancel was requested: stop cleanly."""


class RunLost(Exception):
    """This attempt no longer owns its run (re-claimed, failed by the sweep, or
    finished meanwhile): stop and write nothing."""


def _model(kind_or_model: str | type[Run]) -> type[Run]:
    return MODELS[kind_or_model] if isinstance(kind_or_model, str) else kind_or_model


def run_timeout(kind: str) -> timedelta:
    return timedelta(seconds=settings.RUN_TIMEOUTS[kind])


def _reason(exc: BaseException) -> str:
    if isinstance(exc, DomainError):
        return f"{exc.code}: {exc.message}"[:_REASON_MAX]
    return f"{type(exc).__name__}: {exc}"[:_REASON_MAX]


# --- transitions ------------------------------------------------------------------


def run_claim(model: type[R], run_id: int, *, stale_after: timedelta | None = None
              ) -> R | None:
    """Take a run for this attempt; the claimed run, or None when it is not claimable.

    Claimable: pending, or (with ``stale_after``) running with a heartbeat older
    than that, i.e. its worker was lost.  A claim increments ``attempts`` (this
    attempt's token); a stale run that used up ``RUN_MAX_ATTEMPTS`` is FAILED
    instead.  The row is locked while deciding, so of two claimers one wins.
    """
    now = timezone.now()
    with transaction.atomic():
        run = model.objects.select_for_update().filter(pk=run_id).first()
        if run is None:
            return None
        if run.status == RunStatus.RUNNING and stale_after is not None \
                and _last_sign(run) < now - stale_after:
            if run.attempts >= settings.RUN_MAX_ATTEMPTS:
                _set(run, status=RunStatus.FAILED, finished_at=now,
                     reason=f"worker lost after {run.attempts} attempts")
                _finished(run)
                return None
        elif run.status != RunStatus.PENDING:
            return None
        _set(run, status=RunStatus.RUNNING, attempts=run.attempts + 1, heartbeat_at=now,
             started_at=run.started_at or now, reason="")
    return run


def _last_sign(run: Run) -> datetime:
    return run.heartbeat_at or run.started_at or run.created_at


def _set(run: Run, **fields: Any) -> None:
    for name, value in fields.items():
        setattr(run, name, value)
    run.save(update_fields=list(fields))


def _mine(run: Run):
    """The run's row while this attempt owns it (running, same claim)."""
    return type(run).objects.filter(pk=run.pk, status=RunStatus.RUNNING, attempts=run.attempts)


def run_heartbeat(run: Run, *, cancellable: bool = True, best_effort: bool = False,
                  **fields: Any) -> None:
    """This attempt is alive (and may store ``fields``, e.g. progress, with it).

    Raises ``RunLost`` when the attempt no longer owns the run and, if
    ``cancellable``, ``RunCancelled`` when a cancel was requested.  One UPDATE
    when all is well.  ``best_effort``: a database that is briefly away skips
    this heartbeat instead of failing a long run (the connection is dropped, so
    the next heartbeat reconnects; if it stays away, the sweep sees the run).
    """
    qs = _mine(run)
    if cancellable:
        qs = qs.filter(cancel_requested=False)
    try:
        updated = qs.update(heartbeat_at=timezone.now(), **fields)
    except (OperationalError, InterfaceError):
        if not best_effort or connection.in_atomic_block:
            raise
        logger.warning("%s run %s: heartbeat skipped, database unavailable", run.KIND, run.pk)
        connection.close_if_unusable_or_obsolete()
        return
    if updated:
        return
    if cancellable and _mine(run).filter(cancel_requested=True).exists():
        raise RunCancelled()
    raise RunLost()


def run_finish(run: Run, *, status: str = RunStatus.DONE, reason: str = "",
               **fields: Any) -> None:
    """running -> done (or cancelled / failed) for the attempt that owns the run.

    Call it inside the transaction that stores the run's output, so output and
    status commit together; raises ``RunLost`` (rolling that back) otherwise.
    """
    if status not in FINISHED:
        raise ValueError(f"not a final status: {status}")
    now = timezone.now()
    values = {"status": status, "reason": reason[:_REASON_MAX], "finished_at": now,
              "heartbeat_at": now, **fields}
    if not _mine(run).update(**values):
        raise RunLost()
    for name, value in values.items():
        setattr(run, name, value)


def run_fail(kind_or_model: str | type[Run], run_id: int, *, reason: str) -> bool:
    """pending or running -> failed (whoever holds it): the final failure path of
    a task (``annotations.tasks.RunTask``) and of the sweep.  False if finished."""
    model = _model(kind_or_model)
    if not model.objects.filter(pk=run_id, status__in=ACTIVE).update(
            status=RunStatus.FAILED, reason=reason[:_REASON_MAX], finished_at=timezone.now()):
        return False
    _finished(model.objects.get(pk=run_id))
    return True


def run_release(run: Run, *, reason: str) -> bool:
    """running -> pending: this attempt ended with a transient error and a retry
    (or the sweep) will claim the run again."""
    return bool(_mine(run).update(status=RunStatus.PENDING, reason=reason[:_REASON_MAX],
                                  heartbeat_at=timezone.now()))


def run_cancel(run: R) -> R:
    """A pending run is cancelled at once; a running one is asked to stop (the
    kinds that honour it read the request at their next heartbeat)."""
    model = type(run)
    cancelled = model.objects.filter(pk=run.pk, status=RunStatus.PENDING).update(
        status=RunStatus.CANCELLED, cancel_requested=True, finished_at=timezone.now())
    model.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(cancel_requested=True)
    run.refresh_from_db()
    if cancelled:
        _finished(run)
    return run


# --- one attempt ------------------------------------------------------------------


def run_execute(model: type[R], run_id: int, work: Callable[[R], dict[str, Any] | None], *,
                retry_on: tuple[type[BaseException], ...] = TRANSIENT) -> R:
    """Claim the run, do ``work(run)``, finish it; the run as it ended up.

    ``work`` may finish the run itself (``run_finish`` inside the transaction
    that stores its output); otherwise the fields it returns are stored with
    DONE.  Outcomes: ``RunCancelled`` -> cancelled; ``RunLost`` -> nothing
    written (another attempt or the sweep owns the run); ``DomainError`` or any
    other error -> failed with the reason; an error in ``retry_on`` -> released
    to pending and re-raised, so the task's retry claims it again.  A run that
    is not claimable (finished, or running elsewhere) is returned untouched:
    redelivered and duplicate messages do nothing.
    """
    stale = run_timeout(model.KIND) if REQUEUE.get(model.KIND) else None
    run = run_claim(model, run_id, stale_after=stale)
    if run is None:
        return model.objects.get(pk=run_id)
    ended = _attempt(run, work, retry_on)
    run.refresh_from_db()
    if ended:
        _finished(run)
        run.refresh_from_db()  # what reactions that ran at once wrote (e.g. ``pushed``)
    return run


def _attempt(run: R, work: Callable[[R], dict[str, Any] | None],
             retry_on: tuple[type[BaseException], ...]) -> bool:
    """One claimed attempt; True when this attempt put the run in a final state."""
    model = type(run)
    try:
        fields = work(run)
        if run.status == RunStatus.RUNNING:
            run_finish(run, **(fields or {}))
    except RunCancelled:
        return _finish_quietly(run, RunStatus.CANCELLED, "cancelled")
    except RunLost:
        logger.warning("%s run %s: attempt %s overtaken, stopped", model.KIND, run.pk,
                       run.attempts)
        return False
    except DomainError as exc:
        return _finish_quietly(run, RunStatus.FAILED, _reason(exc))
    except retry_on as exc:
        logger.warning("%s run %s: %s, released for a retry", model.KIND, run.pk, _reason(exc))
        try:
            run_release(run, reason=f"retrying after {_reason(exc)}")
        except Exception:  # the database is what failed: the sweep will see the run
            logger.exception("%s run %s: could not release", model.KIND, run.pk)
        raise
    except Exception as exc:
        logger.exception("%s run %s failed", model.KIND, run.pk)
        return _finish_quietly(run, RunStatus.FAILED, _reason(exc))
    return run.status in FINISHED


def _finish_quietly(run: Run, status: str, reason: str) -> bool:
    try:
        run_finish(run, status=status, reason=reason)
    except RunLost:
        logger.warning("%s run %s: %s not recorded, attempt overtaken", run.KIND, run.pk,
                       status)
        return False
    return True


# --- dispatch -----------------------------------------------------------------------


def run_created(run: Run, *, dispatch: bool = True) -> None:
    """Say that ``run`` exists (its task is queued by the handlers unless ``dispatch``
    is False: its creator executes it in this process)."""
    events.emit(events.RunCreated(kind=run.KIND, run_id=run.pk,
                                  project_id=getattr(run, "project_id", None),
                                  dispatch=dispatch))


def _requeued(run: Run) -> None:
    events.emit(events.RunRequeued(kind=run.KIND, run_id=run.pk))


def _finished(run: Run) -> None:
    events.emit(events.RunFinished(kind=run.KIND, run_id=run.pk,
                                   project_id=getattr(run, "project_id", None),
                                   status=run.status))


# --- the sweep ----------------------------------------------------------------------


@dataclass
class SweepReport:
    requeued: list[tuple[str, int]] = field(default_factory=list)
    failed: list[tuple[str, int]] = field(default_factory=list)
    finished: list[tuple[str, int]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.requeued or self.failed or self.finished)


def runs_sweep(*, timeouts: dict[str, float] | None = None,
               pending_timeout: float | None = None) -> SweepReport:
    """Act on runs whose heartbeat stopped (see the module docstring); what it did.

    ``timeouts`` (seconds per kind) and ``pending_timeout`` override the settings.
    """
    now = timezone.now()
    limits = {k: timedelta(seconds=(timeouts or {}).get(k, settings.RUN_TIMEOUTS[k]))
              for k in MODELS}
    pending = timedelta(seconds=pending_timeout if pending_timeout is not None
                        else settings.RUN_PENDING_TIMEOUT)
    report = SweepReport()
    for kind in ("consensus", "prelabel", "training", "reconcile", "al_round"):
        model = MODELS[kind]
        for run in _stale(model, RunStatus.RUNNING, now - limits[kind]):
            if REQUEUE[kind] and run.attempts < settings.RUN_MAX_ATTEMPTS:
                if _requeue(run, now, f"worker lost: re-queued after attempt {run.attempts}"):
                    report.requeued.append((kind, run.pk))
            elif kind == "training":
                if _fail_lost_training(run, now, limits[kind]):
                    report.failed.append((kind, run.pk))
            elif _fail_lost(run, now, f"worker lost after {run.attempts} attempts"):
                report.failed.append((kind, run.pk))
        for run in _stale(model, RunStatus.PENDING, now - pending):
            if model.objects.filter(pk=run.pk, status=RunStatus.PENDING,
                                    heartbeat_at=run.heartbeat_at).update(heartbeat_at=now):
                _requeued(run)
                report.requeued.append((kind, run.pk))
    _sweep_ingest(now, limits["ingest"], report)
    if report:
        logger.info("runs sweep: re-queued %s, failed %s, finished %s", report.requeued,
                    report.failed, report.finished)
    return report


def _stale(model: type[Run], status: str, cutoff: datetime) -> list[Run]:
    """Runs in ``status`` whose last sign of life is older than ``cutoff``."""
    return list(model.objects.filter(status=status)
                .annotate(last=Coalesce("heartbeat_at", "started_at", "created_at"))
                .filter(last__lt=cutoff).order_by("pk"))


def _still_stale(run: Run):
    """The run's row if nothing happened to it since the sweep read it."""
    return type(run).objects.filter(pk=run.pk, status=run.status, attempts=run.attempts,
                                    heartbeat_at=run.heartbeat_at)


def _requeue(run: Run, now: datetime, reason: str) -> bool:
    if not _still_stale(run).update(status=RunStatus.PENDING, reason=reason, heartbeat_at=now):
        return False
    _requeued(run)
    return True


def _fail_lost(run: Run, now: datetime, reason: str) -> bool:
    if not _still_stale(run).update(status=RunStatus.FAILED, reason=reason, finished_at=now):
        return False
    run.refresh_from_db()
    _finished(run)
    return True


def _fail_lost_training(run: Run, now: datetime, limit: timedelta) -> bool:
    """A lost training is FAILED, never re-queued.

    Re-running it would start from scratch: the weights published every
    ``checkpoint_period`` iterations are for inspection, and resuming from them
    would need the optimizer, scheduler and sampler state, which this platform
    does not keep, so the result would not be the model the run describes.  The
    usual cause of a lost training worker is memory (the OOM killer) or a node
    that went away: running the same job again on its own would likely die the
    same way while holding the only GPU queue.  Nothing was registered (a version
    is created only when training completes), so the registry is unchanged; the
    one-training-per-project slot is free again and an admin starts a new run.
    """
    seconds = int(limit.total_seconds())
    return _fail_lost(run, now, f"worker lost: no heartbeat for {seconds} s; a half-trained "
                                "model is not resumed, start a new training")


def _sweep_ingest(now: datetime, limit: timedelta, report: SweepReport) -> None:
    pending_items = IngestItem.objects.filter(batch=OuterRef("pk"),
                                              status=IngestItem.Status.PENDING)
    # done: no file pending (a batch still being staged has no files yet: wait for those)
    settled = (IngestBatch.objects.filter(status=RunStatus.RUNNING).filter(~Exists(pending_items))
               .filter(Q(Exists(IngestItem.objects.filter(batch=OuterRef("pk"))))
                       | Q(created_at__lt=now - limit)))
    for pk in settled.values_list("pk", flat=True):
        if settled.filter(pk=pk).update(status=RunStatus.DONE, finished_at=now):
            report.finished.append(("ingest", pk))
            _finished(IngestBatch.objects.get(pk=pk))
    for batch in _stale(IngestBatch, RunStatus.RUNNING, now - limit):
        items = list(batch.items.filter(status=IngestItem.Status.PENDING)
                     .values_list("pk", flat=True))
        if not items:
            continue
        if batch.attempts < settings.RUN_MAX_ATTEMPTS:
            if _still_stale(batch).update(attempts=batch.attempts + 1, heartbeat_at=now):
                events.emit(events.IngestItemsRequeued(batch_id=batch.pk,
                                                       item_ids=tuple(items)))
                report.requeued.append(("ingest", batch.pk))
        elif _still_stale(batch).update(status=RunStatus.DONE, finished_at=now,
                                        reason=f"{len(items)} files lost"):
            IngestItem.objects.filter(pk__in=items, status=IngestItem.Status.PENDING).update(
                status=IngestItem.Status.FAILED, reason="worker_lost", updated_at=now,
                detail=f"no worker processed this file after {batch.attempts} re-queues")
            report.failed.append(("ingest", batch.pk))
            batch.refresh_from_db()
            _finished(batch)


def ingest_batch_progress(*, batch_id: int) -> None:
    """A file of the batch was processed: the batch is alive, and done when no
    file is pending any more."""
    now = timezone.now()
    IngestBatch.objects.filter(pk=batch_id, status=RunStatus.RUNNING).update(heartbeat_at=now)
    if IngestBatch.objects.filter(pk=batch_id, status=RunStatus.RUNNING).exclude(
        Exists(IngestItem.objects.filter(batch=OuterRef("pk"), status=IngestItem.Status.PENDING))
    ).update(status=RunStatus.DONE, finished_at=now):
        _finished(IngestBatch.objects.get(pk=batch_id))

