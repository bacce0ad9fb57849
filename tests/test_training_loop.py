"""The loop on CPU, end to end: synthetic films, simulated readers through the
platform's services, consensus, a tiny training run, gold-set evaluation, a
registered and promoted model version, pre-labelling of the pool, and the next
round selected by a non-random strategy that follows the stored scores."""

from __future__ import annotations

import cv2
import pytest
from django.core.management import call_command

from annotations.models import Image, ModelVersion, Prediction, TrainingRun
from annotations.services import ingest, readers
from annotations.services.annotating import BoxIn, reader_annotation_record
from annotations.services.consensus import consensus_run_create, consensus_run_execute
from annotations.services.projects import project_create
from annotations.services.training import training_run_create, training_run_execute
from tests.training.films import TRUTH, film

pytestmark = pytest.mark.django_db


@pytest.fixture
def labelled(tmp_path, settings):
    settings.MODEL_DIR = tmp_path / "models"
    project = project_create(name="Loop", slug="loop", class_names=["Nodule/Mass",
                                                                    "Pleural effusion"])
    project.readers_per_image = 2
    project.save()
    paths = []
    for i in range(14):
        path = tmp_path / "films" / f"film{i:02d}.png"
        path.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(path), film(200 + i, lesion=i % 3 != 2))
        paths.append(path)
    batch = ingest.ingest_batch_create(project=project, inputs=paths)
    from annotations.tasks import ingest_file

    for item_id in batch.items.values_list("id", flat=True):
        ingest_file.delay(item_id=item_id)
    rs = [readers.reader_create(email=f"loop{i}@example.org", code=f"L{i}") for i in (1, 2)]
    images = list(Image.objects.filter(project=project).order_by("id"))
    labelled, pool = images[:10], images[10:]
    readers.assignments_create(project=project, images=labelled)
    for k, image in enumerate(labelled):
        for j, r in enumerate(rs):  # simulated readers: small jitter, same finding
            if k % 3 == 2:
                reader_annotation_record(image=image, reader=r, boxes=[],
                                         image_labels=["No finding"], trigger_consensus=False)
            else:
                box = TRUTH + j
                reader_annotation_record(image=image, reader=r, trigger_consensus=False,
                                         boxes=[BoxIn("Pleural effusion", *box.tolist())])
    Image.objects.filter(pk__in=[i.pk for i in labelled[7:]]).update(is_gold=True)
    run = consensus_run_execute(run_id=consensus_run_create(project=project, strategy="wbf",
                                                            enqueue=False).pk)
    assert run.status == "done"
    return project, pool


def test_train_evaluate_register_prelabel_select(labelled, settings):
    import torch

    settings.PRELABEL_SCORE_THRESH = 0.0  # a barely trained model: keep its doubtful boxes
    torch.set_num_threads(1)
    project, pool = labelled
    run = training_run_create(project=project, enqueue=False, params={
        "preset": "tiny", "max_iter": 60, "ims_per_batch": 2, "base_lr": 0.02,
        "val_fraction": 0.0, "checkpoint_period": 30})
    with pytest.raises(Exception) as second:  # one active training per project
        training_run_create(project=project, enqueue=False)
    assert getattr(second.value, "code", "") == "conflict"
    run = training_run_execute(run_id=run.pk)
    assert run.status == TrainingRun.Status.DONE, run.reason
    assert run.progress["iteration"] == 60 and run.progress["eta_seconds"] == 0
    assert run.progress["checkpoint"]["iteration"] == 30  # published mid-run
    version = ModelVersion.objects.get()
    assert version.promoted and version.metrics["gold_images"] == 3
    assert version.metrics["map_40"] is not None and "froc" in version.metrics
    assert len(version.train_images) == 7  # gold images never trained on
    assert not set(version.train_images) & set(
        Image.objects.filter(is_gold=True).values_list("pseudo_id", flat=True))

    # the next round: scored by the promoted model, chosen by entropy over stored scores
    from annotations.models import ActiveLearningRound, Assignment
    from annotations.services.active_learning import al_round_run, retrain_if_due

    rnd = al_round_run(project=project, strategy="entropy", budget=2,
                       params={"aggregation": "max"})
    stored = {p.image.pseudo_id: p.uncertainty["entropy_max"] for p in
              Prediction.objects.filter(image__in=pool, model_version=version.name)
              .select_related("image")}
    assert len(stored) == len(pool)
    top = sorted(stored.values(), reverse=True)[:2]
    assert sorted((stored[i] for i in rnd.selected), reverse=True) == top
    assert len(set(stored.values())) > 1  # the scores really differ: the choice is informed
    assert rnd.number == 1 and rnd.model_version == version
    assigned = Assignment.objects.filter(image__pseudo_id__in=rnd.selected)
    assert assigned.count() == 2 * project.readers_per_image
    # a diversity-aware round scores TTA and backbone features on the way
    rnd2 = al_round_run(project=project, strategy="hybrid", budget=1,
                        params={"uncertainty": "tta", "pool_factor": 2})
    assert rnd2.number == 2 and len(rnd2.selected) == 1
    assert not set(rnd2.selected) & set(rnd.selected)
    assert Prediction.objects.filter(image__pseudo_id=rnd2.selected[0]).exclude(
        features=None).exists()
    assert ActiveLearningRound.objects.count() == 2
    # retraining starts by itself once enough new final labels exist
    project.auto_retrain_after = 1
    project.save()
    assert retrain_if_due(project) is None  # every final label is in the promoted version
    newly = Image.objects.get(pseudo_id=rnd.selected[0])
    for a in newly.assignments.select_related("reader"):
        reader_annotation_record(image=newly, reader=a.reader, trigger_consensus=False,
                                 boxes=[BoxIn("Pleural effusion", *TRUTH.tolist())])
    consensus_run_execute(run_id=consensus_run_create(project=project, strategy="wbf",
                                                      enqueue=False).pk)
    assert TrainingRun.objects.filter(project=project, status="pending").count() == 1


def _train_tiny(project, iters: int) -> ModelVersion:
    from annotations.services.model_registry import version_promote

    run = training_run_execute(run_id=training_run_create(project=project, enqueue=False, params={
        "preset": "tiny", "max_iter": iters, "ims_per_batch": 2, "base_lr": 0.02,
        "val_fraction": 0.0}).pk)
    assert run.status == TrainingRun.Status.DONE, run.reason
    version = ModelVersion.objects.get(training_run=run)
    if not version.promoted:
        version_promote(version=version, reason="test: score with the newest")
    return version


def test_stability_and_committee_rounds_select_by_the_scores_they_store(labelled, settings):
    import torch

    from annotations.errors import DomainError
    from annotations.services.active_learning import al_round_create, al_round_run
    from training.active_learning import COMMITTEE_KEY, STABILITY_KEY

    settings.PRELABEL_SCORE_THRESH = 0.0
    torch.set_num_threads(1)
    project, pool = labelled
    first = _train_tiny(project, 30)
    # one version only: a committee would be the model alone, so the round is refused
    with pytest.raises(DomainError) as err:
        al_round_create(project=project, strategy="committee", budget=1, enqueue=False)
    assert err.value.code == "conflict" and "earlier model version" in err.value.message

    rnd = al_round_run(project=project, strategy="localisation_stability", budget=1)
    stored = {p.image.pseudo_id: p.uncertainty[STABILITY_KEY] for p in
              Prediction.objects.filter(image__in=pool, model_version=first.name)
              .select_related("image")}
    assert len(stored) == len(pool) and all(0.0 <= v <= 1.0 for v in stored.values())
    assert stored[rnd.selected[0]] == max(stored.values())

    second = _train_tiny(project, 10)
    rnd2 = al_round_run(project=project, strategy="committee", budget=1)
    left = [i for i in pool if i.pseudo_id not in rnd.selected]
    scores = {p.image.pseudo_id: p.uncertainty[COMMITTEE_KEY] for p in
              Prediction.objects.filter(image__in=left, model_version=second.name)
              .select_related("image")}
    assert len(scores) == len(left)
    assert scores[rnd2.selected[0]] == max(scores.values())
    # two differently trained models disagree somewhere: the committee is really two
    assert max(scores.values()) > 0.0


def test_same_seed_is_the_same_run_and_soft_labels_change_it(labelled, admin_user):
    import json

    import torch
    from django.test import Client

    from annotations.models import ConsensusBox

    torch.set_num_threads(1)
    project, _ = labelled
    # the consensus boxes' certainty varies, as a reader model's posterior would
    for k, box in enumerate(ConsensusBox.objects.order_by("id")):
        box.score = (0.2, 0.6, 0.95)[k % 3]
        box.save(update_fields=["score"])

    def train(**extra):
        run = training_run_execute(run_id=training_run_create(
            project=project, enqueue=False, params={
                "preset": "tiny", "max_iter": 12, "ims_per_batch": 2, "base_lr": 0.02,
                "val_fraction": 0.0, "seed": 5, **extra}).pk)
        assert run.status == TrainingRun.Status.DONE, run.reason
        return ModelVersion.objects.get(training_run=run)

    hard, again, soft = train(), train(), train(soft_labels=True)
    weights = {v.name: (settings_model_dir(v) / "model.pth").read_bytes()
               for v in (hard, again, soft)}
    assert weights[hard.name] == weights[again.name]  # same seed, same params: same model
    assert weights[soft.name] != weights[hard.name]  # only soft_labels differs
    # the models API says how each version was trained, so the page can pair them
    client = Client()
    client.force_login(admin_user)
    rows = json.loads(client.get(f"/api/projects/{project.slug}/model-versions/").content)
    rows = rows.get("results", rows) if isinstance(rows, dict) else rows
    by_name = {r["name"]: r for r in rows}
    assert by_name[soft.name]["training_params"]["soft_labels"] is True
    assert by_name[hard.name]["training_params"]["soft_labels"] is False
    assert by_name[hard.name]["training_params"]["seed"] == 5


def settings_model_dir(version):
    from annotations.services.prelabeling import version_files

    return version_files(version.name)


@pytest.mark.django_db(transaction=True)  # the command trains in a thread of its own
def test_failed_training_leaves_registry_unchanged(labelled):
    project, _ = labelled
    run = training_run_create(project=project, enqueue=False, params={
        "preset": "tiny", "max_iter": 5, "ims_per_batch": 2})
    Image.objects.filter(project=project).update(is_gold=True)  # nothing left to train on
    run = training_run_execute(run_id=run.pk)
    assert run.status == TrainingRun.Status.FAILED
    assert "no image outside the gold set" in run.reason
    assert not ModelVersion.objects.exists()
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="no image outside the gold set"):
        call_command("train", project="loop", preset="tiny", max_iter=5)
    assert not ModelVersion.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_cancel_stops_a_running_training(labelled, settings):
    import threading
    import time

    from django.db import connection

    from annotations.services.training import training_run_cancel

    settings.RUN_HEARTBEAT_SECONDS = 1  # a cancel is read at the next heartbeat
    project, _ = labelled
    run = training_run_create(project=project, enqueue=False, params={
        "preset": "tiny", "max_iter": 5000, "ims_per_batch": 2})

    def execute() -> None:
        try:
            training_run_execute(run_id=run.pk)
        finally:
            connection.close()

    worker = threading.Thread(target=execute)
    worker.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        run.refresh_from_db()
        if run.progress.get("iteration"):
            break
        time.sleep(0.2)
    assert run.status == TrainingRun.Status.RUNNING
    training_run_cancel(run=run)
    worker.join(timeout=120)
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.CANCELLED
    assert run.progress["iteration"] < 5000 and not ModelVersion.objects.exists()
