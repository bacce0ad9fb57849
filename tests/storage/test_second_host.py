"""A worker on "another host": its own empty data folder, and nothing shared with the
web side (this test process) but PostgreSQL, the broker and the S3 store.

It ingests the films the web side staged, runs the consensus, trains, evaluates,
registers and pre-labels; afterwards its data folder holds the cache and nothing else,
and the web side's folders hold nothing at all.  So no task read a path it did not
fetch from the store.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import cv2
import pytest

from annotations.models import (
    ConsensusImage,
    Image,
    IngestItem,
    ModelVersion,
    Prediction,
    PrelabelRun,
    RunStatus,
    TrainingRun,
)
from annotations.services import ingest, readers
from annotations.services.annotating import BoxIn, reader_annotation_record
from annotations.services.consensus import consensus_run_create
from annotations.services.prelabeling import prelabel_run_create
from annotations.services.projects import project_create
from annotations.services.training import training_run_create
from tests.s3 import local_files
from tests.training.films import TRUTH, film
from tests.worker import (
    empty_broker,
    start_worker,
    stop_worker_group,
    tasks_to_broker,
    worker_env,
)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

TRAIN = {"preset": "tiny", "max_iter": 20, "ims_per_batch": 2, "base_lr": 0.02,
         "val_fraction": 0.0, "checkpoint_period": 10}


def _wait(what: Callable[[], object], timeout: float, log: Path) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := what():
            return value
        time.sleep(0.3)
    pytest.fail(f"timed out after {timeout} s; worker log:\n"
                f"{log.read_text()[-4000:] if log.exists() else '(none)'}")


def _final(model, pk: int):
    run = model.objects.get(pk=pk)
    return run if run.status not in (RunStatus.PENDING, RunStatus.RUNNING) else None


def test_a_worker_with_its_own_empty_data_dir_does_the_loop_through_the_stores_only(
        s3, settings, tmp_path):
    server, bucket = s3
    client = empty_broker()
    settings.MODEL_DIR = tmp_path / "web" / "models"
    host = tmp_path / "other-host"
    env = worker_env(settings, host, CXR_RUN_HEARTBEAT_SECONDS="1", **server.env(bucket))
    # the worker's folders are its own (worker_env would point them at the web side's)
    env.update(CXR_MEDIA_ROOT=str(host / "media"), CXR_MODEL_DIR=str(host / "models"))
    # and its secrets come from its environment, as on a deployed host (none made on disk)
    env.update(CXR_LABEL_STUDIO_WEBHOOK_SECRET=settings.LABEL_STUDIO_WEBHOOK_SECRET,
               CXR_LABEL_STUDIO_BRIDGE_SECRET=settings.LABEL_STUDIO_BRIDGE_SECRET,
               CXR_LABEL_STUDIO_TOKEN=settings.LABEL_STUDIO_TOKEN or "t" * 40,
               CXR_ML_BACKEND_PASSWORD=settings.ML_BACKEND_PASSWORD or "p" * 32)
    log = tmp_path / "worker.log"
    worker = start_worker(env, "ingest,default,gpu", log, name="otherhost")
    try:
        project = project_create(name="Remote", slug="remote",
                                 class_names=["Nodule/Mass", "Pleural effusion"])
        project.readers_per_image = 2
        project.save()
        films = []
        for i in range(12):
            path = tmp_path / "films" / f"film{i:02d}.png"
            path.parent.mkdir(exist_ok=True)
            cv2.imwrite(str(path), film(300 + i, lesion=i % 3 != 2))
            films.append(path)
        with tasks_to_broker():  # the web side stages; the worker ingests
            batch = ingest.ingest_batch_create(project=project, inputs=films)
        _wait(lambda: not IngestItem.objects.filter(batch=batch, status="pending").exists(),
              180, log)
        assert set(batch.items.values_list("status", flat=True)) == {"imported"}

        rs = [readers.reader_create(email=f"host{i}@example.org", code=f"H{i}") for i in (1, 2)]
        images = list(Image.objects.filter(project=project).order_by("id"))
        labelled, pool = images[:9], images[9:]
        readers.assignments_create(project=project, images=labelled)
        for k, image in enumerate(labelled):
            for j, r in enumerate(rs):
                boxes = [] if k % 3 == 2 else [BoxIn("Pleural effusion", *(TRUTH + j).tolist())]
                reader_annotation_record(image=image, reader=r, boxes=boxes,
                                         image_labels=[] if boxes else ["No finding"],
                                         trigger_consensus=False)
        Image.objects.filter(pk__in=[i.pk for i in labelled[6:]]).update(is_gold=True)
        with tasks_to_broker():
            consensus = consensus_run_create(project=project, strategy="wbf")
        assert _wait(lambda: _final(type(consensus), consensus.pk), 120, log).status == "done"
        assert ConsensusImage.objects.filter(run=consensus).count() == len(labelled)

        with tasks_to_broker():
            run = training_run_create(project=project, params=TRAIN)
        run = _wait(lambda: _final(TrainingRun, run.pk), 300, log)
        assert run.status == RunStatus.DONE, (run.reason, log.read_text()[-3000:])
        version = ModelVersion.objects.get(project=project)
        assert run.progress["checkpoint"]["path"] == f"runs/{run.pk}/last"
        with tasks_to_broker():
            prelabel = prelabel_run_create(project=project, model_version=version.name,
                                           images=pool)
        prelabel = _wait(lambda: _final(PrelabelRun, prelabel.pk), 180, log)
        assert prelabel.status == RunStatus.DONE, (prelabel.reason, log.read_text()[-3000:])
        assert Prediction.objects.filter(image__in=pool, model_version=version.name).count() \
            == len(pool)
    finally:
        stop_worker_group(worker)
        client.flushdb()

    # the tasks ran on the other host, not in this process
    text = log.read_text()
    for task in ("ingest_file", "consensus", "train", "prelabel"):
        assert task in text, task
    objects = server.objects(bucket)
    assert any(k.startswith(f"models/{version.name}/") for k in objects)
    assert any(k.startswith(f"models/runs/{run.pk}/last/") for k in objects)
    assert sum(k.startswith("media/projects/remote/") for k in objects) >= 2 * len(images)
    # the other host's folder: the cache and nothing else; the web side's: nothing
    stray = [p for p in local_files(host) if not p.is_relative_to(host / "cache")]
    assert stray == [], stray
    assert local_files(host / "cache"), "the worker read through its cache"
    assert local_files(settings.MEDIA_ROOT, settings.STAGING_ROOT, settings.QUARANTINE_ROOT,
                       settings.MODEL_DIR) == []
