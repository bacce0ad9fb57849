"""Faults against real Celery workers (real broker, real signals): every run ends
in a final state, nothing is half-stored, and the project can go on.

The sweep is called directly with a short timeout instead of waiting for Celery
beat.  Workers log to a file, run one prefork child in their own process group
(SIGKILL reaches both, as when a node goes away or the OOM killer strikes) and
heartbeat every second.  Needs Redis on CXR_TEST_BROKER_URL and PostgreSQL.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from annotations.models import (
    ConsensusBox,
    ConsensusImage,
    ConsensusRun,
    ModelVersion,
    Prediction,
    PrelabelRun,
    RunStatus,
    TrainingRun,
)
from annotations.services import runs
from annotations.services.consensus import consensus_run_create
from annotations.services.prelabeling import prelabel_run_create
from annotations.services.training import training_run_cancel, training_run_create
from tests import test_run_lifecycle, test_training_loop
from tests.training import test_segmenter_training
from tests.worker import (
    BROKER,
    empty_broker,
    kill_worker,
    start_worker,
    stop_worker_group,
    tasks_to_broker,
    worker_env,
)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# the data of the in-process tests: a labelled project to train on, reads, films and a model
labelled = test_training_loop.labelled
read_project = test_run_lifecycle.read_project
films = test_run_lifecycle.films
painted = test_segmenter_training.painted

#: Long enough to be killed or cancelled mid-way (the tiny preset, ~0.4 s an iteration here).
LONG = {"preset": "tiny", "max_iter": 500, "ims_per_batch": 2, "base_lr": 0.02,
        "val_fraction": 0.0, "checkpoint_period": 1000}
SHORT = {**LONG, "max_iter": 20}


@pytest.fixture
def broker():
    client = empty_broker()
    yield BROKER
    client.flushdb()


@pytest.fixture
def workers(settings, tmp_path):
    """Start workers (``start(queues, faults="")``); all are stopped at the end."""
    started = []
    log = tmp_path / "workers.log"

    def start(queues: str, faults: str = "") -> object:
        env = worker_env(settings, tmp_path / "var", CXR_RUN_HEARTBEAT_SECONDS="1")
        worker = start_worker(env, queues, log, faults=faults, fault_dir=tmp_path,
                              name=f"w{len(started)}")
        started.append(worker)
        return worker

    start.log = lambda: log.read_text() if log.exists() else ""
    yield start
    for worker in started:
        if worker.poll() is None:
            stop_worker_group(worker)


def wait_for(what: Callable[[], object], timeout: float, log: Callable[[], str]) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(0.25)
    pytest.fail(f"timed out after {timeout} s; workers' log:\n{log()[-4000:]}")


def _final(model, pk: int):
    run = model.objects.get(pk=pk)
    return run if run.status not in (RunStatus.PENDING, RunStatus.RUNNING) else None


def test_sigkill_mid_training_fails_the_run_and_the_project_goes_on(labelled, broker,
                                                                    workers, settings):
    project, _ = labelled
    worker = workers("gpu")
    with tasks_to_broker():
        run = training_run_create(project=project, params=LONG)
    run = wait_for(lambda: (r := TrainingRun.objects.get(pk=run.pk)).progress.get(
        "iteration", 0) >= 10 and r, 150, workers.log)
    kill_worker(worker)
    t_killed = time.monotonic()
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING and run.progress["iteration"] < LONG["max_iter"]

    time.sleep(2.5)
    report = runs.runs_sweep(timeouts={"training": 2})
    assert report.failed == [("training", run.pk)] and not report.requeued
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and run.reason.startswith("worker lost"), run.reason
    recovered = time.monotonic() - t_killed
    assert not ModelVersion.objects.exists()  # the registry is unchanged
    assert not (Path(settings.MODEL_DIR) / f"{project.slug}-v1").exists()

    workers("gpu")
    with tasks_to_broker():
        again = training_run_create(project=project, params=SHORT)
    again = wait_for(lambda: _final(TrainingRun, again.pk), 240, workers.log)
    assert again.status == RunStatus.DONE, (again.reason, workers.log()[-3000:])
    version = ModelVersion.objects.get()
    assert again.model_version == version and version.training_run_id == again.pk
    assert version.promoted and again.attempts == 1
    print(f"\nrecovered {recovered:.1f} s after the kill")  # noqa: T201


def test_sigkill_mid_mask_model_training_leaves_nothing_and_a_rerun_serves(
        painted, broker, workers, settings):
    """The U-Net's training run on a real worker, killed mid-way: the sweep fails it,
    no version or folder is left; the next run trains, evaluates and is promoted."""
    project, _, _ = painted
    params = {"task": "segmenter", "preset": "tiny", "max_iter": 4000, "ims_per_batch": 2,
              "val_fraction": 0.0}
    worker = workers("gpu")
    with tasks_to_broker():
        run = training_run_create(project=project, params=params)
    run = wait_for(lambda: (r := TrainingRun.objects.get(pk=run.pk)).progress.get(
        "iteration", 0) >= 80 and r, 180, workers.log)
    kill_worker(worker)
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING and run.progress["iteration"] < params["max_iter"]
    time.sleep(2.5)
    report = runs.runs_sweep(timeouts={"training": 2})
    assert report.failed == [("training", run.pk)]
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and run.reason.startswith("worker lost"), run.reason
    assert not ModelVersion.objects.filter(kind="segmenter").exists()
    assert not any(Path(settings.MODEL_DIR).glob(f"{project.slug}-v*"))

    workers("gpu")
    with tasks_to_broker():
        again = training_run_create(project=project, params={**params, "max_iter": 60})
    again = wait_for(lambda: _final(TrainingRun, again.pk), 240, workers.log)
    assert again.status == RunStatus.DONE, (again.reason, workers.log()[-3000:])
    version = ModelVersion.objects.get(kind="segmenter")
    assert version.training_run_id == again.pk and version.promoted
    assert version.metrics["mean_dice"] is not None


def test_cancel_during_training_on_a_worker(labelled, broker, workers, settings):
    project, _ = labelled
    workers("gpu")
    with tasks_to_broker():
        run = training_run_create(project=project, params=LONG)
    wait_for(lambda: TrainingRun.objects.get(pk=run.pk).progress.get("iteration", 0) >= 10,
             150, workers.log)
    asked = time.monotonic()
    training_run_cancel(run=run)
    run = wait_for(lambda: _final(TrainingRun, run.pk), 60, workers.log)
    stopped = time.monotonic() - asked
    assert run.status == RunStatus.CANCELLED, run.reason
    assert run.progress["iteration"] < LONG["max_iter"] and stopped < 15
    assert not ModelVersion.objects.exists()
    assert not any(Path(settings.MODEL_DIR).glob(f"{project.slug}-v*"))
    assert training_run_create(project=project, enqueue=False).status == RunStatus.PENDING


def test_sigkill_mid_consensus_is_requeued_and_ends_done(read_project, broker, workers,
                                                         tmp_path):
    worker = workers("default", faults="consensus_slow")
    with tasks_to_broker():
        run = consensus_run_create(project=read_project)
    wait_for(lambda: (tmp_path / "consensus_storing").exists(), 60, workers.log)
    kill_worker(worker)  # inside the run's transaction
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING and run.attempts == 1
    assert not ConsensusImage.objects.exists()  # nothing half-stored

    time.sleep(2.5)
    with tasks_to_broker():
        report = runs.runs_sweep(timeouts={"consensus": 2})
    assert report.requeued == [("consensus", run.pk)]
    workers("default")
    run = wait_for(lambda: _final(ConsensusRun, run.pk), 90, workers.log)
    assert run.status == RunStatus.DONE and run.attempts == 2, run.reason
    assert run.stats == {"images": 4, "annotations": 8, "boxes": 3}
    assert ConsensusImage.objects.count() == 4 and ConsensusBox.objects.count() == 3
    assert run.annotations.count() == 8 and ConsensusRun.objects.count() == 1


def test_prelabel_oserror_once_is_retried_and_ends_done(films, broker, workers, tmp_path):
    workers("gpu", faults="prelabel_oserror_once")
    with tasks_to_broker():
        run = prelabel_run_create(project=films)
    run = wait_for(lambda: _final(PrelabelRun, run.pk), 120, workers.log)
    assert (tmp_path / "prelabel_oserror").exists()  # the fault did fire
    assert "Retry in" in workers.log()
    assert run.status == RunStatus.DONE and run.attempts == 2, (run.reason,
                                                                workers.log()[-3000:])
    assert run.done == run.total == 5 and Prediction.objects.count() == 5
