"""Image ids are unique platform-wide: the same file in two projects is two images,
and nothing that looks an image up by id alone can reach the other project's copy."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.db import IntegrityError, transaction
from rest_framework.test import APIClient

from annotations.models import Image
from annotations.services.projects import project_create
from annotations.services.signing import signed_image_path
from annotations.services.storage import media_path
from tests.conftest import ingest_paths, write_png

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_projects(project, admin_user, tmp_path):
    """One PNG ingested into ``test`` and into ``other`` (which renders with CLAHE, so
    the two display derivatives differ)."""
    other = project_create(name="Other", slug="other", actor=admin_user, clahe=True)
    path = write_png(tmp_path / "same.png", seed=11)
    for p in (project, other):
        item = ingest_paths(p, [path]).items.get()
        assert item.status == "imported", item.reason
    return Image.objects.get(project=project), Image.objects.get(project=other), path


def test_same_file_in_two_projects_gets_distinct_image_ids(two_projects, admin_user):
    a, b, _ = two_projects
    assert a.pixel_hash == b.pixel_hash
    assert a.pseudo_id != b.pseudo_id
    assert a.pseudo_id.startswith("IMG-") and b.pseudo_id.startswith("IMG-")
    api = APIClient()
    api.force_authenticate(admin_user)
    for image, slug in ((a, "test"), (b, "other")):
        res = api.get(f"/api/images/{image.pseudo_id}/")  # no MultipleObjectsReturned
        assert res.status_code == 200 and res.json()["project"] == slug


def test_image_file_route_serves_each_projects_own_derivative(two_projects):
    a, b, _ = two_projects
    own = {i.pseudo_id: media_path(i.display_path).read_bytes() for i in (a, b)}
    assert own[a.pseudo_id] != own[b.pseudo_id]  # CLAHE in one project only
    for image in (a, b):
        res = APIClient().get(signed_image_path(image.pseudo_id, "display"))
        assert res.status_code == 200
        assert b"".join(res.streaming_content) == own[image.pseudo_id]


def test_reingest_into_the_same_project_is_still_a_duplicate(two_projects):
    a, _, path = two_projects
    item = ingest_paths(a.project, [Path(path)]).items.get()
    assert item.status == "duplicate" and item.image_id == a.pk
    assert item.reason == "duplicate_instance"


def test_the_database_refuses_a_second_image_with_the_same_id(two_projects):
    a, b, _ = two_projects
    with pytest.raises(IntegrityError), transaction.atomic():
        Image.objects.filter(pk=b.pk).update(pseudo_id=a.pseudo_id)
