"""The pipeline as domain events and one handlers module (``annotations.events``,
``annotations.handlers``): every event has its reaction, a reaction commits or rolls
back with its cause, the handlers are the only place that queues work, and each link
of the chain (reads -> consensus -> retrain -> promote -> pre-label) fires."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
from django.db import transaction

from annotations import events, handlers
from annotations.errors import DomainError
from annotations.models import (
    AuditEvent,
    ConsensusRun,
    ModelVersion,
    PrelabelRun,
    ReaderAnnotation,
    RunStatus,
    TrainingRun,
    Workspace,
    WorkspaceTask,
)
from annotations.services import readers
from annotations.services.annotating import BoxIn, reader_annotation_record
from annotations.services.consensus import consensus_run_create, consensus_run_execute
from annotations.services.model_registry import version_promote
from tests.conftest import ingest_paths, one_reader_films, write_png

pytestmark = pytest.mark.django_db

EVENT_KINDS = [cls for _, cls in inspect.getmembers(events, inspect.isclass)
               if issubclass(cls, events.Event) and cls is not events.Event]


@pytest.fixture
def two_readers(project, tmp_path):
    """Three images with two readers each; every read but the last is in."""
    project.readers_per_image = 2
    project.save()
    ingest_paths(project, [write_png(tmp_path / "in" / f"e{i}.png", seed=70 + i)
                           for i in range(3)])
    rs = [readers.reader_create(email=f"ev{i}@example.org", code=f"EV{i}") for i in (1, 2)]
    images = list(project.images.order_by("id"))
    readers.assignments_create(project=project, images=images)
    for image in images:
        reader_annotation_record(image=image, reader=rs[0],
                                 boxes=[BoxIn("Nodule/Mass", 20, 20, 60, 70)])
    for image in images[:-1]:
        reader_annotation_record(image=image, reader=rs[1],
                                 boxes=[BoxIn("Nodule/Mass", 22, 20, 60, 70)])
    return project, images[-1], rs[1]


@pytest.mark.parametrize("kind", EVENT_KINDS, ids=lambda k: k.__name__)
def test_every_event_has_its_reaction_in_the_handlers(kind):
    reactions = events.subscribers(kind)
    assert reactions, f"nothing reacts to {kind.__name__}"
    assert all(fn.__module__ == handlers.__name__ for fn in reactions)


def test_events_carry_ids_never_rows():
    for kind in EVENT_KINDS:
        for f in dataclasses.fields(kind):
            assert f.type in ("int", "int | None", "str", "bool", "tuple[int, ...]"), (
                kind, f.name, f.type)


def test_the_last_read_queues_one_consensus_run_when_it_commits(
        two_readers, django_capture_on_commit_callbacks):
    project, last_image, reader = two_readers
    before = ConsensusRun.objects.count()
    with django_capture_on_commit_callbacks() as queued:
        reader_annotation_record(image=last_image, reader=reader,
                                 boxes=[BoxIn("Nodule/Mass", 21, 20, 60, 70)])
    run = ConsensusRun.objects.get(trigger=ConsensusRun.Trigger.READS_COMPLETE,
                                   image_scope=[last_image.pseudo_id])
    assert ConsensusRun.objects.count() == before + 1
    assert run.status == RunStatus.PENDING and len(queued) == 1


def test_a_rolled_back_read_leaves_no_consensus_run_and_queues_nothing(
        two_readers, django_capture_on_commit_callbacks):
    project, last_image, reader = two_readers
    runs_before = ConsensusRun.objects.count()
    with django_capture_on_commit_callbacks() as queued, pytest.raises(RuntimeError):
        with transaction.atomic():
            reader_annotation_record(image=last_image, reader=reader,
                                     boxes=[BoxIn("Nodule/Mass", 21, 20, 60, 70)])
            raise RuntimeError("the request failed after the read was recorded")
    assert ConsensusRun.objects.count() == runs_before
    assert queued == []
    assert not ReaderAnnotation.objects.filter(image=last_image, reader=reader).exists()


def test_a_failing_reaction_rolls_back_the_read_that_caused_it(two_readers, monkeypatch):
    """Synchronous delivery: a reaction that cannot happen undoes its cause, so there
    is never a completed read without its consensus run."""
    project, last_image, reader = two_readers

    def broken(event):
        raise DomainError("unavailable", "consensus could not be created")

    monkeypatch.setitem(events._subscribers, events.ReadsCompleted, [broken])
    with pytest.raises(DomainError), transaction.atomic():
        reader_annotation_record(image=last_image, reader=reader,
                                 boxes=[BoxIn("Nodule/Mass", 21, 20, 60, 70)])
    assert not ReaderAnnotation.objects.filter(image=last_image, reader=reader).exists()


def test_a_finished_consensus_starts_the_retraining_that_is_due(two_readers):
    project, last_image, reader = two_readers
    project.auto_retrain_after = 2
    project.save()
    run = consensus_run_create(project=project, enqueue=False)
    assert consensus_run_execute(run_id=run.pk).status == RunStatus.DONE
    training = TrainingRun.objects.get(project=project)
    assert training.status == RunStatus.PENDING


def test_a_retraining_already_running_is_noted_not_raised(two_readers):
    project, _, _ = two_readers
    project.auto_retrain_after = 1
    project.save()
    TrainingRun.objects.create(project=project, status=RunStatus.RUNNING)
    run = consensus_run_create(project=project, enqueue=False)
    assert consensus_run_execute(run_id=run.pk).status == RunStatus.DONE
    assert TrainingRun.objects.filter(project=project).count() == 1


def _reading_tasks(project, images, reader, with_prediction=()):
    ws = Workspace.objects.create(project=project, reader=reader, kind="reading",
                                  ls_project_id=9000 + reader.pk)
    for n, image in enumerate(images):
        WorkspaceTask.objects.create(workspace=ws, image=image, ls_task_id=90000 + n)
    return ws


def _version(project, settings, tmp_path, name="v7"):
    settings.MODEL_DIR = tmp_path / "models"
    (settings.MODEL_DIR / name).mkdir(parents=True)
    (settings.MODEL_DIR / name / "config.yaml").write_text("{}\n")
    return ModelVersion.objects.create(project=project, name=name, sha256="0" * 64, config="")


@pytest.mark.parametrize("show_prelabels", [True, False])
def test_a_promotion_prelabels_the_open_reading_tasks_only_where_the_project_shows_them(
        two_readers, settings, tmp_path, show_prelabels):
    project, last_image, reader = two_readers
    project.show_prelabels = show_prelabels
    project.save()
    images = list(project.images.order_by("id"))
    _reading_tasks(project, images[1:], reader)
    version = _version(project, settings, tmp_path)
    version_promote(version=version, reason="test")
    made = list(PrelabelRun.objects.filter(project=project))
    if not show_prelabels:
        assert made == []
        return
    assert len(made) == 1 and made[0].model_version == "v7"
    assert made[0].image_scope == sorted(i.pseudo_id for i in images[1:])


def test_a_promotion_whose_files_are_gone_still_stands(two_readers, settings, tmp_path):
    project, _, reader = two_readers
    project.show_prelabels = True
    project.save()
    _reading_tasks(project, list(project.images.all()), reader)
    version = _version(project, settings, tmp_path)
    (settings.MODEL_DIR / "v7" / "config.yaml").unlink()
    version_promote(version=version, reason="test")
    version.refresh_from_db()
    assert version.promoted
    assert not PrelabelRun.objects.filter(project=project).exists()
    assert AuditEvent.objects.filter(action="prelabel.auto_start_skipped").exists()


def test_a_new_batch_queues_one_task_per_staged_file(project, tmp_path,
                                                     django_capture_on_commit_callbacks):
    from annotations.services import ingest

    paths = [write_png(tmp_path / f"b{i}.png", seed=90 + i) for i in range(3)]
    with django_capture_on_commit_callbacks() as queued:
        batch = ingest.ingest_batch_create(project=project, inputs=paths)
    assert batch.items.count() == 3 and len(queued) == 3


def test_assignments_are_pushed_only_for_projects_that_read_in_label_studio(
        project, tmp_path, django_capture_on_commit_callbacks):
    ingest_paths(project, [write_png(tmp_path / f"a{i}.png", seed=95 + i) for i in range(2)])
    rs = [readers.reader_create(email=f"as{i}@example.org", code=f"AS{i}") for i in range(3)]
    with django_capture_on_commit_callbacks() as queued:
        readers.assignments_create(project=project)
    assert queued == []  # no workspace: nothing to push to
    Workspace.objects.create(project=project, reader=rs[0], kind="reading", ls_project_id=8123)
    image = project.images.order_by("id").first()
    image.assignments.all().delete()
    with django_capture_on_commit_callbacks() as queued:
        readers.assignments_create(project=project)
    assert len(queued) == 1


def test_a_promotion_scores_the_pool_for_the_next_round_whatever_the_switch(
        project, settings, tmp_path):
    ingest_paths(project, [write_png(tmp_path / f"p{i}.png", seed=60 + i) for i in range(3)])
    gold = project.images.order_by("id").first()
    gold.is_gold = True
    gold.save()
    version = _version(project, settings, tmp_path)
    version_promote(version=version, reason="test")
    run = PrelabelRun.objects.get(project=project)
    assert run.image_scope == sorted(project.images.filter(is_gold=False)
                                     .values_list("pseudo_id", flat=True))


def test_promoting_the_serving_version_again_starts_no_new_prelabelling(
        project, settings, tmp_path):
    ingest_paths(project, [write_png(tmp_path / f"q{i}.png", seed=50 + i) for i in range(2)])
    version = _version(project, settings, tmp_path)
    version_promote(version=version, reason="test")
    PrelabelRun.objects.update(status=RunStatus.DONE)
    version_promote(version=version, reason="forced again")
    assert PrelabelRun.objects.count() == 1


def test_a_promotion_skips_images_the_version_already_scored(project, settings, tmp_path):
    from annotations.models import Prediction

    ingest_paths(project, [write_png(tmp_path / f"s{i}.png", seed=30 + i) for i in range(3)])
    version = _version(project, settings, tmp_path)
    scored = project.images.order_by("id").first()
    Prediction.objects.create(image=scored, model_version=version.name, boxes=[], score=0.0,
                              uncertainty={})
    version_promote(version=version, reason="test")
    run = PrelabelRun.objects.get()
    assert scored.pseudo_id not in run.image_scope and len(run.image_scope) == 2


@pytest.mark.parametrize("name", ["../other-project/v1", "/tmp/weights", "runs"])
def test_the_prelabel_api_runs_only_this_projects_registered_versions(
        project, settings, tmp_path, admin_user, name):
    from rest_framework.test import APIClient

    _version(project, settings, tmp_path)
    (settings.MODEL_DIR / "runs").mkdir()
    (settings.MODEL_DIR / "runs" / "config.yaml").write_text("{}\n")
    client = APIClient()
    client.force_authenticate(admin_user)
    r = client.post(f"/api/projects/{project.slug}/prelabel-runs/",
                    {"model_version": name}, format="json")
    assert r.status_code == 404, r.content
    assert not PrelabelRun.objects.exists()
    r = client.post(f"/api/projects/{project.slug}/prelabel-runs/",
                    {"model_version": "v7", "images": []}, format="json")
    assert r.status_code == 400 and not PrelabelRun.objects.exists()


def test_a_finished_ingest_batch_says_so_once(project, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setitem(events._subscribers, events.RunFinished, [seen.append])
    ingest_paths(project, [write_png(tmp_path / f"f{i}.png", seed=20 + i) for i in range(2)])
    assert [(e.kind, e.status) for e in seen] == [("ingest", "done")]


def test_reads_completed_held_in_a_block_arrive_once_per_project_when_it_ends(monkeypatch):
    seen = []
    monkeypatch.setitem(events._subscribers, events.ReadsCompleted, [seen.append])
    with events.coalesced(events.ReadsCompleted):
        events.emit(events.ReadsCompleted(project_id=2, image_ids=(5,)))
        events.emit(events.ReadsCompleted(project_id=1, image_ids=(9, 3)))
        events.emit(events.ReadsCompleted(project_id=2, image_ids=(4, 5)))
        assert seen == []  # held until the block ends
    assert seen == [events.ReadsCompleted(project_id=1, image_ids=(3, 9)),
                    events.ReadsCompleted(project_id=2, image_ids=(4, 5))]


def test_events_held_by_a_block_that_fails_are_dropped_with_it(monkeypatch):
    seen = []
    monkeypatch.setitem(events._subscribers, events.ReadsCompleted, [seen.append])
    with pytest.raises(RuntimeError), events.coalesced(events.ReadsCompleted):
        events.emit(events.ReadsCompleted(project_id=1, image_ids=(1,)))
        raise RuntimeError("the pass died here")
    assert seen == []
    events.emit(events.ReadsCompleted(project_id=1, image_ids=(2,)))  # and nothing is held
    assert seen == [events.ReadsCompleted(project_id=1, image_ids=(2,))]


def test_an_inner_block_leaves_delivery_to_the_outer_one_and_other_kinds_pass(monkeypatch):
    seen = []
    monkeypatch.setitem(events._subscribers, events.ReadsCompleted, [seen.append])
    monkeypatch.setitem(events._subscribers, events.ModelPromoted, [seen.append])
    with events.coalesced(events.ReadsCompleted):
        with events.coalesced(events.ReadsCompleted):
            events.emit(events.ReadsCompleted(project_id=1, image_ids=(1,)))
        events.emit(events.ModelPromoted(version_id=1, project_id=1))  # not held
        assert seen == [events.ModelPromoted(version_id=1, project_id=1)]
        events.emit(events.ReadsCompleted(project_id=1, image_ids=(2,)))
    assert seen[1:] == [events.ReadsCompleted(project_id=1, image_ids=(1, 2))]


def test_reads_completed_in_one_transaction_make_one_consensus_run_for_all(
        project, tmp_path, django_capture_on_commit_callbacks):
    """What a reconcile pass does with a chunk of missed reads: one run, not one per image,
    created in the reads' transaction."""
    reader, images = one_reader_films(project, tmp_path, 3, seed=90, code="CO1")
    before = ConsensusRun.objects.count()
    with django_capture_on_commit_callbacks() as queued:
        with transaction.atomic(), events.coalesced(events.ReadsCompleted):
            for img in images:
                reader_annotation_record(image=img, reader=reader,
                                         boxes=[BoxIn("Nodule/Mass", 20, 20, 60, 70)])
            assert ConsensusRun.objects.count() == before  # held until the chunk ends
    run = ConsensusRun.objects.get(trigger=ConsensusRun.Trigger.READS_COMPLETE)
    assert sorted(run.image_scope) == sorted(i.pseudo_id for i in images)
    assert ConsensusRun.objects.count() == before + 1 and len(queued) == 1
