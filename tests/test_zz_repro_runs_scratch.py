"""SCRATCH (to be deleted): reproduce issue 13's run-lifecycle faults on the current code."""
import cv2
import pytest

from annotations.models import ConsensusRun, PrelabelRun, TrainingRun
from annotations.services.consensus import consensus_run_create
from annotations.services.prelabeling import prelabel_run_create
from annotations.services.training import training_run_create
from tests.conftest import ingest_paths
from tests.ml_backend.servers import model_dir_with
from tests.training.films import film

pytestmark = pytest.mark.django_db


def test_killed_training_stays_running_and_blocks(project):
    from annotations.tasks import gpu_training_task
    run = training_run_create(project=project, enqueue=False)
    TrainingRun.objects.filter(pk=run.pk).update(status="running")  # claimed, then SIGKILL
    gpu_training_task.apply(kwargs={"run_id": run.pk})  # the redelivered message
    run.refresh_from_db()
    print("training after redelivery:", run.status)
    with pytest.raises(Exception) as err:
        training_run_create(project=project, enqueue=False)
    print("new training:", getattr(err.value, "code", err.value))


def test_killed_consensus_stays_running(project):
    from annotations.tasks import consensus_run_execute_task
    run = consensus_run_create(project=project, enqueue=False)
    ConsensusRun.objects.filter(pk=run.pk).update(status="running")
    consensus_run_execute_task.apply(kwargs={"run_id": run.pk})
    run.refresh_from_db()
    print("consensus after redelivery:", run.status)


def test_prelabel_oserror_retry_cannot_claim(project, tmp_path, settings, trained_version,
                                             monkeypatch):
    from annotations.services import prelabeling
    from annotations.tasks import gpu_prelabel_task
    settings.MODEL_DIR = model_dir_with(trained_version.directory, tmp_path)
    paths = []
    for i in range(3):
        p = tmp_path / "films" / f"f{i}.png"
        p.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(p), film(100 + i))
        paths.append(p)
    ingest_paths(project, paths)
    real, calls = prelabeling._detector, []

    def flaky(*a, **k):
        calls.append(1)
        if len(calls) == 1:
            raise OSError("NFS hiccup")
        return real(*a, **k)

    monkeypatch.setattr(prelabeling, "_detector", flaky)
    run = prelabel_run_create(project=project, enqueue=False)
    gpu_prelabel_task.apply(kwargs={"run_id": run.pk})
    run.refresh_from_db()
    print("prelabel after OSError + retry:", run.status, "detector calls", len(calls))


def test_cancel_flag_on_prelabel(project):
    print("PrelabelRun has cancel_requested:", hasattr(PrelabelRun, "cancel_requested"))
