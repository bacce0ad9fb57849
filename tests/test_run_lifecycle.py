"""One run lifecycle (``annotations.services.runs``): guarded transitions, the
sweep's policy per kind, retries that claim their run again, cancellation.

Each fault of issue 13 is reproduced here in-process (tasks run eagerly); the
same faults with real workers and real signals are in ``test_run_faults.py``.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import cv2
import pytest
from celery.exceptions import Retry
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from annotations.errors import DomainError
from annotations.models import (
    ConsensusBox,
    ConsensusImage,
    ConsensusRun,
    IngestItem,
    PrelabelRun,
    RunStatus,
    TrainingRun,
)
from annotations.services import readers, runs
from annotations.services.annotating import BoxIn, reader_annotation_record
from annotations.services.consensus import consensus_run_create
from annotations.services.prelabeling import prelabel_run_cancel, prelabel_run_create
from annotations.services.training import training_run_create
from tests.conftest import ingest_paths, write_png
from tests.ml_backend.servers import model_dir_with, register_promoted
from tests.training.films import film

pytestmark = pytest.mark.django_db


def _age(run, seconds: float) -> None:
    """Make the run's last sign of life ``seconds`` old."""
    past = timezone.now() - timedelta(seconds=seconds)
    type(run).objects.filter(pk=run.pk).update(heartbeat_at=past, created_at=past)
    run.refresh_from_db()


@pytest.fixture
def read_project(project, tmp_path):
    """Four images, each read by two readers (one box each, or "No finding")."""
    project.readers_per_image = 2
    project.save()
    ingest_paths(project, [write_png(tmp_path / "in" / f"r{i}.png", seed=40 + i)
                           for i in range(4)])
    rs = [readers.reader_create(email=f"run{i}@example.org", code=f"RUN{i}") for i in (1, 2)]
    images = list(project.images.order_by("id"))
    readers.assignments_create(project=project, images=images)
    for k, image in enumerate(images):
        for j, r in enumerate(rs):
            boxes = [] if k == 3 else [BoxIn("Nodule/Mass", 20 + j, 20, 60, 70)]
            reader_annotation_record(image=image, reader=r, boxes=boxes, trigger_consensus=False,
                                     image_labels=["No finding"] if k == 3 else [])
    return project


# --- guarded transitions ------------------------------------------------------------


@pytest.mark.parametrize("status", [RunStatus.DONE, RunStatus.FAILED, RunStatus.CANCELLED])
def test_a_finished_run_never_goes_back(project, status):
    run = consensus_run_create(project=project, enqueue=False)
    ConsensusRun.objects.filter(pk=run.pk).update(status=status, attempts=1)
    run.refresh_from_db()
    _age(run, 10_000)  # even with a long-stopped heartbeat
    assert runs.run_claim(ConsensusRun, run.pk, stale_after=timedelta(seconds=1)) is None
    assert not runs.run_fail("consensus", run.pk, reason="late failure")
    assert not runs.run_release(run, reason="late retry")
    with pytest.raises(runs.RunLost):
        runs.run_finish(run)
    with pytest.raises(runs.RunLost):
        runs.run_heartbeat(run)
    runs.run_cancel(run)
    assert not runs.runs_sweep(timeouts={"consensus": 0}, pending_timeout=0)
    run.refresh_from_db()
    assert run.status == status and run.attempts == 1


def _race(claim, n: int = 2) -> list:
    """Run ``claim`` in ``n`` threads at once (own database connections); results."""
    barrier = threading.Barrier(n)
    results: list = []

    def contender() -> None:
        try:
            barrier.wait()
            results.append(claim())
        finally:
            connection.close()

    threads = [threading.Thread(target=contender) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


@pytest.mark.django_db(transaction=True)
def test_two_claimers_race_only_one_wins(project):
    for _ in range(5):
        run = consensus_run_create(project=project, enqueue=False)
        won = [r for r in _race(lambda pk=run.pk: runs.run_claim(ConsensusRun, pk)) if r]
        assert len(won) == 1
        run.refresh_from_db()
        assert run.status == RunStatus.RUNNING and run.attempts == 1
        assert won[0].attempts == 1
    # two workers re-claiming the same lost run: one takes it over
    _age(run, 60)
    stale = timedelta(seconds=30)
    won = [r for r in _race(lambda: runs.run_claim(ConsensusRun, run.pk, stale_after=stale)) if r]
    assert len(won) == 1 and won[0].attempts == 2


def test_an_overtaken_attempt_can_neither_heartbeat_nor_finish(project):
    run = consensus_run_create(project=project, enqueue=False)
    first = runs.run_claim(ConsensusRun, run.pk)
    assert runs.run_claim(ConsensusRun, run.pk) is None  # running, heartbeat fresh
    _age(first, 120)
    second = runs.run_claim(ConsensusRun, run.pk, stale_after=timedelta(seconds=60))
    assert (first.attempts, second.attempts) == (1, 2)
    with pytest.raises(runs.RunLost):
        runs.run_heartbeat(first)
    with pytest.raises(runs.RunLost):
        runs.run_finish(first)
    assert not runs.run_release(first, reason="too late")
    runs.run_heartbeat(second)
    runs.run_finish(second, stats={"images": 0})
    run.refresh_from_db()
    assert run.status == RunStatus.DONE and run.attempts == 2 and run.finished_at


def test_a_lost_run_past_its_attempts_is_failed_not_claimed(project, settings):
    settings.RUN_MAX_ATTEMPTS = 2
    run = consensus_run_create(project=project, enqueue=False)
    ConsensusRun.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING, attempts=2)
    _age(run, 120)
    assert runs.run_claim(ConsensusRun, run.pk, stale_after=timedelta(seconds=60)) is None
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and "worker lost after 2 attempts" in run.reason


def test_cancel_pending_is_final_and_running_is_a_request(project):
    pending = consensus_run_create(project=project, enqueue=False)
    runs.run_cancel(pending)
    assert pending.status == RunStatus.CANCELLED and pending.finished_at
    assert runs.run_claim(ConsensusRun, pending.pk) is None
    running = runs.run_claim(ConsensusRun, consensus_run_create(
        project=project, strategy="majority", enqueue=False).pk)
    runs.run_cancel(running)
    assert running.status == RunStatus.RUNNING and running.cancel_requested
    with pytest.raises(runs.RunCancelled):
        runs.run_heartbeat(running)
    runs.run_heartbeat(running, cancellable=False)  # kinds that do not honour it go on


# --- the faults of issue 13, in-process ------------------------------------------------


def test_lost_training_is_failed_by_the_sweep_and_frees_the_project(project):
    """Before: the redelivered task found a RUNNING run and returned, and the
    one-active-training constraint refused every new training of the project."""
    from annotations.tasks import gpu_training_task

    run = training_run_create(project=project, enqueue=False)
    runs.run_claim(TrainingRun, run.pk)  # a worker took it, then was SIGKILLed
    _age(run, 120)
    gpu_training_task.apply(kwargs={"run_id": run.pk})  # the redelivered message
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING  # a training is never re-claimed...
    with pytest.raises(DomainError) as refused:
        training_run_create(project=project, enqueue=False)
    assert refused.value.code == "conflict"
    assert not runs.runs_sweep(timeouts={"training": 300})  # ...nor failed while it may live
    report = runs.runs_sweep(timeouts={"training": 60})
    assert report.failed == [("training", run.pk)] and not report.requeued
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and run.reason.startswith("worker lost")
    assert run.finished_at is not None
    assert training_run_create(project=project, enqueue=False).status == RunStatus.PENDING


def test_lost_consensus_is_requeued_and_counts_add_up(read_project,
                                                      django_capture_on_commit_callbacks):
    """Before: a consensus run left RUNNING by a dead worker stayed RUNNING."""
    from annotations.tasks import consensus_run_execute_task

    run = consensus_run_create(project=read_project, enqueue=False)
    runs.run_claim(ConsensusRun, run.pk)  # claimed, then the worker died (nothing stored)
    _age(run, 1200)
    with django_capture_on_commit_callbacks(execute=True) as queued:
        report = runs.runs_sweep(timeouts={"consensus": 600})
    assert report.requeued == [("consensus", run.pk)] and len(queued) == 1
    run.refresh_from_db()
    assert run.status == RunStatus.DONE and run.attempts == 2, run.reason
    assert run.stats == {"images": 4, "annotations": 8, "boxes": 3}
    assert ConsensusImage.objects.filter(run=run).count() == 4
    assert ConsensusBox.objects.filter(consensus_image__run=run).count() == 3
    assert run.annotations.count() == 8
    # a stale message for the same run arriving later does nothing
    consensus_run_execute_task.apply(kwargs={"run_id": run.pk})
    assert ConsensusImage.objects.filter(run=run).count() == 4


def test_redelivered_consensus_reclaims_a_stale_run(read_project, settings):
    from annotations.tasks import consensus_run_execute_task

    run = consensus_run_create(project=read_project, enqueue=False)
    runs.run_claim(ConsensusRun, run.pk)
    _age(run, settings.RUN_TIMEOUTS["consensus"] + 5)
    consensus_run_execute_task.apply(kwargs={"run_id": run.pk})
    run.refresh_from_db()
    assert run.status == RunStatus.DONE and run.attempts == 2


def test_lost_consensus_past_its_attempts_is_failed(read_project, settings):
    settings.RUN_MAX_ATTEMPTS = 1
    run = consensus_run_create(project=read_project, enqueue=False)
    runs.run_claim(ConsensusRun, run.pk)
    _age(run, 1200)
    assert runs.runs_sweep().failed == [("consensus", run.pk)]
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and run.reason == "worker lost after 1 attempts"


def test_a_lost_message_is_queued_again(read_project, django_capture_on_commit_callbacks):
    run = consensus_run_create(project=read_project, enqueue=False)  # its message never came
    _age(run, 7200)
    with django_capture_on_commit_callbacks(execute=True):
        assert runs.runs_sweep().requeued == [("consensus", run.pk)]
    run.refresh_from_db()
    assert run.status == RunStatus.DONE and run.attempts == 1


def test_task_failure_path_marks_the_run_failed(read_project, monkeypatch):
    from annotations.services import consensus
    from annotations.tasks import consensus_run_execute_task

    def broken(*, run_id):
        raise KeyError("boom")

    monkeypatch.setattr(consensus, "consensus_run_execute", broken)
    run = consensus_run_create(project=read_project, enqueue=False)
    # as a worker runs it: the failure is handled, not raised (throw=False)
    assert consensus_run_execute_task.apply(kwargs={"run_id": run.pk}, throw=False).failed()
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and run.reason == "task failed: KeyError: 'boom'"


def test_an_error_inside_the_run_fails_it_with_the_reason(read_project, monkeypatch):
    from annotations.services import consensus

    def broken(*args, **kwargs):
        raise ValueError("no such strategy state")

    monkeypatch.setattr(consensus, "_compute", broken)
    run = consensus.consensus_run_execute(
        run_id=consensus_run_create(project=read_project, enqueue=False).pk)
    assert run.status == RunStatus.FAILED and run.reason == "ValueError: no such strategy state"
    assert not ConsensusImage.objects.filter(run=run).exists()


@pytest.fixture
def films(project, tmp_path, settings, trained_version):
    settings.MODEL_DIR = model_dir_with(trained_version.directory, tmp_path)
    register_promoted(project, "v1", trained_version.sha256)
    paths = []
    for i in range(5):
        path = tmp_path / "films" / f"f{i}.png"
        path.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(path), film(100 + i, lesion=i % 2 == 0))
        paths.append(path)
    ingest_paths(project, paths)
    return project


def test_prelabel_retry_after_oserror_claims_the_run_again(films, monkeypatch):
    """Before: the retry found the run RUNNING and returned; it stayed RUNNING."""
    from annotations.services import prelabeling
    from annotations.tasks import gpu_prelabel_task

    real, calls = prelabeling._detector, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OSError("model file briefly unreadable")
        return real(*args, **kwargs)

    monkeypatch.setattr(prelabeling, "_detector", flaky)
    run = prelabel_run_create(project=films, enqueue=False)
    with pytest.raises(Retry):
        gpu_prelabel_task.apply(kwargs={"run_id": run.pk})
    run.refresh_from_db()
    assert run.status == RunStatus.PENDING and "OSError" in run.reason
    gpu_prelabel_task.apply(kwargs={"run_id": run.pk}, retries=1)  # the retry's message
    run.refresh_from_db()
    assert run.status == RunStatus.DONE and run.attempts == 2 and run.reason == ""
    assert run.done == run.total == 5 and len(calls) == 2


def test_prelabel_cancel_stops_after_the_current_batch(films):
    from annotations.services.prelabeling import prelabel_run_execute

    run = prelabel_run_create(project=films, enqueue=False)
    seen = []

    def progress(done: int, total: int) -> None:
        seen.append(done)
        prelabel_run_cancel(run=run)

    run = prelabel_run_execute(run_id=run.pk, batch_size=2, progress=progress)
    assert run.status == RunStatus.CANCELLED and seen == [2]
    assert run.done == 2 and run.total == 5 and run.finished_at


def test_api_cancels_a_pending_prelabel_run(films, admin_user):
    from rest_framework.test import APIClient

    run = prelabel_run_create(project=films, enqueue=False)
    client = APIClient()
    client.force_authenticate(admin_user)
    resp = client.post(f"/api/prelabel-runs/{run.pk}/cancel/")
    assert resp.status_code == 200 and resp.json()["status"] == "cancelled"
    assert PrelabelRun.objects.get(pk=run.pk).status == RunStatus.CANCELLED


# --- ingest batches ---------------------------------------------------------------------


def test_ingest_batch_is_done_when_its_last_file_is(project, png_images):
    batch = ingest_paths(project, png_images)
    batch.refresh_from_db()
    assert batch.status == RunStatus.DONE and batch.finished_at and batch.heartbeat_at


def test_lost_ingest_files_are_queued_again_then_failed(project, png_images, settings,
                                                        django_capture_on_commit_callbacks):
    from annotations.services import ingest

    settings.RUN_MAX_ATTEMPTS = 1
    batch = ingest.ingest_batch_create(project=project, inputs=png_images[:2])
    _age(batch, 4000)  # staged, but no worker ever processed a file
    with django_capture_on_commit_callbacks(execute=True):
        assert runs.runs_sweep().requeued == [("ingest", batch.pk)]
    batch.refresh_from_db()
    assert batch.status == RunStatus.DONE and batch.attempts == 1
    assert set(batch.items.values_list("status", flat=True)) == {IngestItem.Status.IMPORTED}

    lost = ingest.ingest_batch_create(project=project, inputs=png_images[2:])
    IngestItem.objects.filter(batch=lost).update(updated_at=timezone.now())
    runs.IngestBatch.objects.filter(pk=lost.pk).update(attempts=1)
    _age(lost, 4000)
    assert runs.runs_sweep().failed == [("ingest", lost.pk)]
    lost.refresh_from_db()
    assert lost.status == RunStatus.DONE and lost.reason == "2 files lost"
    assert set(lost.items.values_list("reason", flat=True)) == {"worker_lost"}


def test_sweep_command(project, capsys):
    run = training_run_create(project=project, enqueue=False)
    runs.run_claim(TrainingRun, run.pk)
    _age(run, 30)
    call_command("sweep_runs", timeout=10)
    assert f"failed: training {run.pk}" in capsys.readouterr().out


def test_the_sweep_is_on_celery_beat(settings, project):
    from annotations.tasks import runs_sweep_task
    from cxr_platform.celery import app

    entry = settings.CELERY_BEAT_SCHEDULE["runs-sweep"]
    assert entry["task"] == "annotations.tasks.runs_sweep_task" and entry["task"] in app.tasks
    run = training_run_create(project=project, enqueue=False)
    runs.run_claim(TrainingRun, run.pk)
    _age(run, settings.RUN_TIMEOUTS["training"] + 1)
    runs_sweep_task.apply()
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED


def test_trainer_heartbeat_hook_beats_by_time_not_iterations():
    from training.trainer import HeartbeatHook

    beats: list[int] = []
    hook = HeartbeatHook(lambda: beats.append(1), seconds=3600)
    hook.before_train()
    for _ in range(100):
        hook.after_step()
    assert len(beats) == 1  # at the start, then not before an hour
    hook.seconds = 0
    hook.after_step()
    assert len(beats) == 2


@pytest.mark.django_db(transaction=True)
def test_a_best_effort_heartbeat_survives_a_database_blip(project, monkeypatch):
    from django.db import OperationalError

    run = runs.run_claim(TrainingRun, training_run_create(project=project, enqueue=False).pk)
    real = runs._mine

    class Away:
        def filter(self, **kwargs):
            return self

        def update(self, **kwargs):
            raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(runs, "_mine", lambda r: Away())
    with pytest.raises(OperationalError):
        runs.run_heartbeat(run)
    runs.run_heartbeat(run, best_effort=True)  # skipped: a long training goes on
    monkeypatch.setattr(runs, "_mine", real)
    runs.run_heartbeat(run, best_effort=True, progress={"iteration": 1})
    assert TrainingRun.objects.get(pk=run.pk).progress == {"iteration": 1}


# --- reconcile passes -----------------------------------------------------------------


def test_a_reconcile_asked_for_while_one_is_active_joins_it(db):
    from annotations.models import ReconcileRun
    from annotations.services.label_studio_sync import reconcile_run_create

    first = reconcile_run_create(dispatch=False)
    assert reconcile_run_create(dispatch=False) == first
    ReconcileRun.objects.filter(pk=first.pk).update(status=RunStatus.DONE)
    assert reconcile_run_create(dispatch=False) != first


def test_a_reconcile_pass_whose_worker_was_lost_is_queued_again_and_finishes(db):
    from annotations.models import ReconcileRun
    from annotations.services.label_studio_sync import reconcile_run_create, reconcile_run_execute

    run = reconcile_run_create(dispatch=False)
    ReconcileRun.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING, attempts=1)
    _age(run, 10_000)
    report = runs.runs_sweep(timeouts={"reconcile": 60})
    assert ("reconcile", run.pk) in report.requeued
    run = reconcile_run_execute(run_id=run.pk)
    assert (run.status, run.attempts, run.failed_workspaces) == (RunStatus.DONE, 2, [])


# --- active-learning rounds ---------------------------------------------------------


@pytest.fixture
def al_project(project, settings, tmp_path):
    """A promoted version whose files cannot score (no weights): rounds are created and
    claimed, and their scoring fails the way a broken model would."""
    from annotations.models import ModelVersion
    from annotations.services.model_registry import version_promote

    ingest_paths(project, [write_png(tmp_path / f"al{i}.png", seed=80 + i) for i in range(3)])
    for i in range(project.readers_per_image):
        readers.reader_create(email=f"al{i}@example.org", code=f"AL{i}")
    settings.MODEL_DIR = tmp_path / "models"
    (settings.MODEL_DIR / "v1").mkdir(parents=True)
    (settings.MODEL_DIR / "v1" / "config.yaml").write_text("{}\n")
    version = ModelVersion.objects.create(project=project, name="v1", sha256="0" * 64,
                                          config="")
    version_promote(version=version, reason="test")
    return project


def test_a_round_with_a_bad_strategy_is_refused_before_it_exists(al_project):
    from annotations.models import ActiveLearningRound
    from annotations.services.active_learning import al_round_create

    with pytest.raises(DomainError):
        al_round_create(project=al_project, strategy="clairvoyance", budget=2, enqueue=False)
    assert not ActiveLearningRound.objects.exists()


def test_a_round_whose_scoring_fails_ends_failed_and_assigns_nothing(al_project):
    from annotations.models import ActiveLearningRound, Assignment
    from annotations.services.active_learning import al_round_run

    promoted = set(PrelabelRun.objects.values_list("pk", flat=True))  # the promotion's own
    with pytest.raises(DomainError) as err:
        al_round_run(project=al_project, strategy="entropy", budget=2)
    assert err.value.code == "round_failed"
    rnd = ActiveLearningRound.objects.get()
    assert rnd.status == RunStatus.FAILED and "scoring" in rnd.reason
    assert rnd.number is None and not Assignment.objects.exists()
    assert not PrelabelRun.objects.filter(status__in=runs.ACTIVE).exclude(pk__in=promoted)


def test_a_second_round_while_one_is_on_its_way_is_refused(al_project):
    from annotations.services.active_learning import al_round_create

    al_round_create(project=al_project, strategy="entropy", budget=2, enqueue=False)
    with pytest.raises(DomainError) as err:
        al_round_create(project=al_project, strategy="entropy", budget=2, enqueue=False)
    assert err.value.code == "conflict"


@pytest.mark.parametrize("stop", ["cancelled", "overtaken"])
def test_a_round_stopped_mid_scoring_leaves_no_scoring_run_behind(al_project, monkeypatch,
                                                                   stop):
    """The round's heartbeat runs inside its scoring run: whatever stops the round ends
    the scoring run too (else the sweep would later re-queue it on its own)."""
    from django.db.models import F

    from annotations.models import ActiveLearningRound
    from annotations.services import active_learning, prelabeling

    promoted = set(PrelabelRun.objects.values_list("pk", flat=True))  # the promotion's own
    rnd = active_learning.al_round_create(project=al_project, strategy="entropy", budget=2,
                                          enqueue=False)

    def scoring(*, run_id, progress, **kwargs):
        def work(run):
            mine = ActiveLearningRound.objects.filter(pk=rnd.pk)
            if stop == "cancelled":
                mine.update(cancel_requested=True)
            else:  # another attempt claimed the round meanwhile
                mine.update(attempts=F("attempts") + 1)
            progress(1, 3)  # the round's heartbeat
        return runs.run_execute(PrelabelRun, run_id, work)

    monkeypatch.setattr(active_learning, "prelabel_run_execute", scoring)
    monkeypatch.setattr(prelabeling, "version_files", lambda name: None)
    ended = active_learning.al_round_execute(run_id=rnd.pk)
    assert ended.status == (RunStatus.CANCELLED if stop == "cancelled" else RunStatus.RUNNING)
    assert not PrelabelRun.objects.filter(status__in=runs.ACTIVE).exclude(pk__in=promoted)


def test_a_round_whose_worker_was_lost_is_queued_again(al_project):
    from annotations.models import ActiveLearningRound
    from annotations.services.active_learning import al_round_create

    rnd = al_round_create(project=al_project, strategy="entropy", budget=2, enqueue=False)
    ActiveLearningRound.objects.filter(pk=rnd.pk).update(status=RunStatus.RUNNING, attempts=1)
    _age(rnd, 10_000)
    assert ("al_round", rnd.pk) in runs.runs_sweep(timeouts={"al_round": 60}).requeued
    rnd.refresh_from_db()
    assert rnd.status == RunStatus.PENDING


def test_a_cancelled_pending_round_never_runs(al_project):
    from annotations.services.active_learning import al_round_create, al_round_execute

    rnd = al_round_create(project=al_project, strategy="entropy", budget=2, enqueue=False)
    runs.run_cancel(rnd)
    assert al_round_execute(run_id=rnd.pk).status == RunStatus.CANCELLED
