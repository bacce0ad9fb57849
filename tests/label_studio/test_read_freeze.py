"""Reads freeze when blinding ends: once an image is final, a reader who edits or deletes
their read in Label Studio changes nothing that consensus, agreement or training use, and
the admin sees the violation."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from annotations.label_studio.regions import build_result
from annotations.models import ConsensusRun, Image, ProtocolViolation, ReaderAnnotation
from annotations.services import label_studio_sync as sync
from annotations.services import readers
from annotations.services.image_state import image_states
from annotations.services.labels import final_results
from tests.conftest import ingest_paths, write_png
from tests.label_studio.readers_ls import reader_client

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def final_image(label_studio, ls_settings, project, tmp_path):
    ingest_paths(project, [write_png(tmp_path / "in" / "a.png", seed=8, size=(600, 500))])
    rs = [readers.reader_create(email=f"r{i}@example.org", code=f"R{i}") for i in (1, 2, 3)]
    readers.assignments_create(project=project)
    sync.assignments_push(project)
    image = Image.objects.get()
    anns = {}
    for r, box in zip(rs, ([100, 120, 200, 260], [104, 118, 206, 262], [98, 125, 199, 255]),
                      strict=True):
        result = build_result([box], ["Nodule/Mass"], original_width=image.width,
                              original_height=image.height)
        anns[r.code] = reader_client(label_studio, r).create_annotation(
            r.workspaces.get().tasks.get().ls_task_id, result)
    assert image_states(project, [image.pk])[image.pk] == "final"
    return project, rs, image, anns


def _snapshot(project, image, admin):
    reads = sorted((a.reader.code, a.version, tuple(sorted(
        (b.x_min, b.y_min, b.x_max, b.y_max) for b in a.boxes.all())))
        for a in ReaderAnnotation.objects.filter(image=image, is_current=True))
    labels = final_results(project)
    agreement = admin.get(f"/api/projects/{project.slug}/agreement/").json()
    return reads, ConsensusRun.objects.count(), repr(labels), agreement


def test_reader_edits_after_final_changes_nothing_and_admin_sees_it(final_image,
                                                                    label_studio, admin_user):
    project, (r1, _, _), image, anns = final_image
    admin = APIClient()
    admin.force_authenticate(admin_user)
    before = _snapshot(project, image, admin)
    moved = build_result([[300, 200, 450, 380]], ["Pleural effusion"],
                         original_width=image.width, original_height=image.height)
    reader_client(label_studio, r1).update_annotation(int(anns["R1"]["id"]), moved)
    assert _snapshot(project, image, admin) == before
    violation = ProtocolViolation.objects.get()
    assert violation.kind == "after_unblinding" and violation.actual_reader == r1
    # reconcile sees the same edit again: still excluded, recorded once
    assert sync.reconcile_all()["violation"] == 1
    assert ProtocolViolation.objects.count() == 1 and _snapshot(project, image, admin) == before
    listed = admin.get(f"/api/projects/{project.slug}/violations/").json()["results"]
    assert [(v["kind"], v["workspace_reader"]) for v in listed] == [("after_unblinding", "R1")]


def test_reader_deletes_after_final_keeps_the_frozen_read(final_image, label_studio,
                                                          admin_user):
    project, (r1, _, _), image, anns = final_image
    admin = APIClient()
    admin.force_authenticate(admin_user)
    before = _snapshot(project, image, admin)
    reader_client(label_studio, r1).delete_annotation(int(anns["R1"]["id"]))
    assert _snapshot(project, image, admin) == before
    assert ProtocolViolation.objects.get().detail["reason"].startswith("read deleted")
    sync.reconcile_all()
    assert _snapshot(project, image, admin) == before
