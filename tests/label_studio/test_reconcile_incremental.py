"""Reconcile passes look only at what Label Studio changed since the last pass (a real
Label Studio): missed creates, edits and deletes are still repaired, untouched tasks
are not exported again, and a full pass comes round on schedule."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from annotations.label_studio.regions import build_result
from annotations.models import Image, ReaderAnnotation, Workspace
from annotations.services import label_studio_sync as sync
from annotations.services import readers
from tests.conftest import ingest_paths, write_png
from tests.label_studio.readers_ls import reader_client

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def lost_webhooks(label_studio, ls_settings, project, tmp_path, settings, monkeypatch):
    """Three films read by two readers whose webhooks never arrive (Label Studio holds
    a secret the platform no longer accepts): only reconcile can see their reads."""
    files = [write_png(tmp_path / "in" / f"cxr{i}.png", seed=70 + i, size=(500, 400))
             for i in range(3)]
    ingest_paths(project, files)
    project.readers_per_image = 2
    project.save()
    rs = [readers.reader_create(email=f"inc{i}@example.org", code=f"I{i}") for i in (1, 2)]
    readers.assignments_create(project=project)
    assert sync.assignments_push(project) == 6
    settings.LABEL_STUDIO_WEBHOOK_SECRET = "rotated-" + "x" * 30
    # no overlap: a pass right after another sees exactly what changed in between
    monkeypatch.setattr(sync, "RECONCILE_OVERLAP", dt.timedelta(0))
    return rs, list(Image.objects.order_by("id"))


def _annotate(label_studio, reader, image, box):
    task = reader.workspaces.get(kind="reading").tasks.get(image=image)
    result = build_result([box], ["Nodule/Mass"], original_width=image.width,
                          original_height=image.height)
    return reader_client(label_studio, reader).create_annotation(task.ls_task_id, result)


def test_a_pass_after_a_pass_exports_only_what_changed(lost_webhooks, label_studio):
    (r1, r2), images = lost_webhooks
    first = _annotate(label_studio, r1, images[0], [10, 10, 90, 90])
    _annotate(label_studio, r2, images[1], [20, 20, 80, 80])
    counts = sync.reconcile_all()  # never reconciled: a full pass
    assert counts["created"] == 2 and counts["scanned"] == 6
    assert all(w.ls_reconciled_through and w.reconciled_full_at
               for w in Workspace.objects.all())

    quiet = sync.reconcile_all()
    assert quiet["scanned"] == 0 and quiet["created"] == 0  # nothing changed: nothing read

    # missed again: an edit, a delete, a new read, each in one task
    r1_client = reader_client(label_studio, r1)
    r1_client.update_annotation(int(first["id"]), build_result(
        [[30, 30, 120, 120]], ["Nodule/Mass"], original_width=images[0].width,
        original_height=images[0].height))
    _annotate(label_studio, r1, images[2], [5, 5, 60, 60])
    second = ReaderAnnotation.objects.get(reader=r2, is_current=True)
    reader_client(label_studio, r2).delete_annotation(int(second.external_id))
    counts = sync.reconcile_all()
    assert counts["scanned"] == 3  # the three changed tasks, of six
    assert counts["created"] == 2 and counts["withdrawn"] == 1
    current = {(a.reader.code, a.image_id): a for a in
               ReaderAnnotation.objects.filter(is_current=True)}
    assert set(current) == {("I1", images[0].pk), ("I1", images[2].pk)}
    box = current[("I1", images[0].pk)].boxes.get()
    assert [box.x_min, box.y_min, box.x_max, box.y_max] == pytest.approx([30, 30, 120, 120])


def test_a_full_pass_comes_round_and_repairs_what_a_mark_would_skip(lost_webhooks,
                                                                       label_studio,
                                                                       settings):
    (r1, _), images = lost_webhooks
    _annotate(label_studio, r1, images[0], [10, 10, 90, 90])
    sync.reconcile_all()
    # a read the platform lost after the pass (a restored backup): no task changed since
    ReaderAnnotation.objects.all().delete()
    assert sync.reconcile_all()["scanned"] == 0
    # the daily full pass looks at every task again and finds it
    Workspace.objects.update(reconciled_full_at=timezone.now() - dt.timedelta(
        hours=settings.RECONCILE_FULL_HOURS + 1))
    counts = sync.reconcile_all()
    assert counts["scanned"] == 6 and counts["created"] == 1


def test_a_pass_that_finds_every_read_of_three_films_starts_one_consensus_run(
        lost_webhooks, label_studio):
    """Missed webhooks for a whole reading: the pass stores the reads a chunk at a time,
    and the films whose reads it completed get one consensus run, not one each."""
    from annotations.models import ConsensusRun
    from annotations.services.image_state import image_states

    (r1, r2), images = lost_webhooks
    for reader in (r1, r2):
        for i, img in enumerate(images):
            _annotate(label_studio, reader, img, [10 + i, 10, 90, 90])
    counts = sync.reconcile_all()
    assert counts["created"] == 6
    run = ConsensusRun.objects.get(trigger=ConsensusRun.Trigger.READS_COMPLETE)
    assert sorted(run.image_scope) == sorted(i.pseudo_id for i in images)
    assert run.status == "done"
    project = images[0].project
    assert set(image_states(project).values()) == {"final"}
    # the daily full pass again: every read is this very version, nothing is redone
    again = sync.reconcile_all(full=True)
    assert again["unchanged"] == 6 and again["created"] == 0
    assert ConsensusRun.objects.count() == 1


def test_a_pass_that_dies_mid_chunk_stores_none_of_it_and_the_next_stores_all(
        lost_webhooks, label_studio, monkeypatch):
    (r1, _), images = lost_webhooks
    for img in images:
        _annotate(label_studio, r1, img, [10, 10, 90, 90])
    real, calls = sync._reconcile_task, []

    def dies_on_the_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("worker lost")
        return real(*args, **kwargs)

    monkeypatch.setattr(sync, "_reconcile_task", dies_on_the_third)
    with pytest.raises(RuntimeError):
        sync.reconcile_all()
    # two reads were applied in the chunk before it died: neither is stored, no mark moved
    assert not ReaderAnnotation.objects.exists()
    assert not Workspace.objects.filter(ls_reconciled_through__gt="").exists()
    monkeypatch.setattr(sync, "_reconcile_task", real)
    counts = sync.reconcile_all()
    assert counts["created"] == 3
    assert ReaderAnnotation.objects.filter(reader=r1, is_current=True).count() == 3


def test_a_chunk_whose_consensus_is_refused_is_applied_read_by_read(lost_webhooks,
                                                                     label_studio):
    """The project's stored strategy no longer builds (a deploy dropped a parameter): the
    reads that complete an image are refused, as a webhook's would be, and every other
    read of the chunk is still stored; the workspace does not fail."""
    from annotations.models import Project

    (r1, r2), images = lost_webhooks
    for img in images:
        _annotate(label_studio, r1, img, [10, 10, 90, 90])
    for img in images[:2]:
        _annotate(label_studio, r2, img, [12, 10, 90, 90])
    Project.objects.filter(pk=images[0].project_id).update(
        consensus_params={"iou_thr": "not a number"})
    counts = sync.reconcile_all()
    assert counts["failed_workspaces"] == []
    assert counts["created"] == 3 and counts["rejected"] == 2
    assert ReaderAnnotation.objects.filter(reader=r1, is_current=True).count() == 3
    assert not ReaderAnnotation.objects.filter(reader=r2).exists()
