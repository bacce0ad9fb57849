"""Reads resolve their boxes against the project's taxonomy: once per reconcile chunk
inside ``taxonomy_cached``, and as stored at that moment everywhere else (a webhook, the
API), so a class an admin adds is known to the very next read."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from annotations.errors import DomainError
from annotations.models import LabelClass
from annotations.services.annotating import BoxIn, reader_annotation_record, taxonomy_cached
from tests.conftest import one_reader_films

pytestmark = pytest.mark.django_db


@pytest.fixture
def films(project, tmp_path):
    reader, images = one_reader_films(project, tmp_path, 4, seed=30, code="TX1")
    return project, reader, images


def _taxonomy_reads(queries) -> int:
    return sum('FROM "annotations_labelclass"' in q["sql"] for q in queries)


def test_a_class_added_between_two_reads_is_known_to_the_second(films):
    project, reader, images = films
    with pytest.raises(DomainError):
        reader_annotation_record(image=images[0], reader=reader,
                                 boxes=[BoxIn("Rib fracture", 10, 10, 50, 50)])
    LabelClass.objects.create(project=project, class_id=99, name="Rib fracture",
                              code="rib-fracture")
    _, created = reader_annotation_record(image=images[0], reader=reader,
                                          boxes=[BoxIn("Rib fracture", 10, 10, 50, 50)])
    assert created


def test_inside_a_chunk_the_taxonomy_is_read_once_for_all_its_reads(films):
    project, reader, images = films
    with CaptureQueriesContext(connection) as outside:
        reader_annotation_record(image=images[0], reader=reader,
                                 boxes=[BoxIn("Nodule/Mass", 10, 10, 50, 50)])
    assert _taxonomy_reads(outside.captured_queries) == 1
    with CaptureQueriesContext(connection) as inside, taxonomy_cached():
        for img in images[1:]:
            reader_annotation_record(image=img, reader=reader,
                                     boxes=[BoxIn("Nodule/Mass", 10, 10, 50, 50)])
    assert _taxonomy_reads(inside.captured_queries) == 1
    with CaptureQueriesContext(connection) as after:  # the block is over: read again
        reader_annotation_record(image=images[0], reader=reader,
                                 boxes=[BoxIn("Nodule/Mass", 12, 10, 50, 50)])
    assert _taxonomy_reads(after.captured_queries) == 1
