"""The image state machine, every state and every edge of it, as the database query
decides it: for the whole project, for a subset, for a subquery, and as counts."""

from __future__ import annotations

from collections import Counter

import pytest

from annotations.models import Adjudication, Assignment, ConsensusRun, Image
from annotations.services import readers
from annotations.services.annotating import BoxIn, reader_annotation_record
from annotations.services.consensus import consensus_run_create, consensus_run_execute
from annotations.services.image_state import consensus_is_final, image_states, state_counts
from tests.conftest import ingest_paths, write_png

pytestmark = pytest.mark.django_db


def _read(image, reader, x: float = 10) -> None:
    reader_annotation_record(image=image, reader=reader, trigger_consensus=False,
                             boxes=[BoxIn("Nodule/Mass", x, 10, x + 40, 50)])


@pytest.fixture
def every_state(project, tmp_path):
    ingest_paths(project, [write_png(tmp_path / f"s{i}.png", seed=i) for i in range(10)])
    images = list(Image.objects.order_by("id"))
    r1, r2 = (readers.reader_create(email=f"s{i}@example.org", code=f"S{i}") for i in (1, 2))
    for img in images[1:]:
        for r in (r1, r2):
            Assignment.objects.create(image=img, reader=r)
    for img in images[2:]:
        _read(img, r1)
    for img in images[3:]:
        _read(img, r2)
    run = consensus_run_execute(run_id=consensus_run_create(
        project=project, strategy="majority", images=images[4:], enqueue=False).pk)
    assert run.status == ConsensusRun.Status.DONE
    # a run that failed "covers" image 3: it does not count
    failed = ConsensusRun.objects.create(project=project, strategy="majority",
                                         status=ConsensusRun.Status.FAILED)
    failed.images.create(image=images[3], n_readers=2)
    for i in (5, 7, 8):  # a new version after the run: not covered any more
        _read(images[i], r1, x=60)
    Adjudication.objects.create(project=project, image=images[6])  # pending
    Adjudication.objects.create(project=project, image=images[7], status="done")  # decides
    # decided, then a later case was cancelled: the decision stands
    Adjudication.objects.create(project=project, image=images[8], status="done")
    Adjudication.objects.create(project=project, image=images[8], status="cancelled")
    # a read excluded after the run (a protocol violation) is not a read to cover
    later = images[9]
    r3 = readers.reader_create(email="s3@example.org", code="S3")
    Assignment.objects.create(image=later, reader=r3, status="completed")
    reader_annotation_record(image=later, reader=r3, boxes=[], trigger_consensus=False,
                             excluded_reason="foreign_annotator")
    want = {images[0].pk: "unassigned", images[1].pk: "reading", images[2].pk: "reading",
            images[3].pk: "read", images[4].pk: "final", images[5].pk: "read",
            images[6].pk: "adjudication", images[7].pk: "final", images[8].pk: "final",
            images[9].pk: "final"}
    return project, images, want


def test_every_state_is_decided_as_the_rules_say(every_state):
    project, _, want = every_state
    assert image_states(project) == want


def test_a_subset_a_subquery_and_the_counts_agree_with_the_whole(every_state):
    project, images, want = every_state
    some = [images[i].pk for i in (0, 5, 6, 9)]
    assert image_states(project, some) == {pk: want[pk] for pk in some}
    sub = Assignment.objects.filter(image__in=images[5:8]).values("image_id")
    assert image_states(project, sub) == {i.pk: want[i.pk] for i in images[5:8]}
    assert image_states(project, []) == {}
    assert state_counts(project) == {s: Counter(want.values()).get(s, 0) for s in (
        "unassigned", "reading", "read", "adjudication", "final")}


def test_the_quick_finality_check_agrees_with_the_state_query_on_every_edge(every_state):
    """``consensus_is_final`` answers "not final" without the state query when no
    finished run and no decided adjudication covers the image; it must never differ
    from the query, including for an image decided by an adjudicator alone (image 3:
    only a failed run over it)."""
    project, images, want = every_state
    Adjudication.objects.create(project=project, image=images[3], status="done")
    want = {**want, images[3].pk: "final"}
    assert image_states(project) == want
    for img in images:
        assert consensus_is_final(img) == (want[img.pk] == "final"), img.pk


def test_another_projects_images_are_not_in_its_states(every_state, admin_user):
    from annotations.services.projects import project_create

    project, images, _ = every_state
    other = project_create(name="Other", slug="other", actor=admin_user)
    assert image_states(other) == {}
    assert image_states(other, [i.pk for i in images]) == {}
    assert sum(state_counts(other).values()) == 0


def test_the_planner_setting_for_many_images_does_not_outlive_the_query(every_state):
    from django.db import connection

    project, images, want = every_state
    assert image_states(project, [i.pk for i in images]) == want
    with connection.cursor() as cursor:
        cursor.execute("SHOW enable_nestloop")
        before = cursor.fetchone()[0]
        image_states(project)  # the whole project: nested loops off for this query only
        state_counts(project)
        cursor.execute("SHOW enable_nestloop")
        assert cursor.fetchone()[0] == before == "on"
