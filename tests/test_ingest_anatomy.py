"""A chest project and a film that is not a frontal chest radiograph: the header says so
at ingest, and the project's anatomy policy decides (quarantine by default, flag, accept)."""

from __future__ import annotations

import pydicom
import pytest

from annotations.imaging.anatomy import anatomy_finding
from annotations.imaging.synthetic.generate import generate_studies
from annotations.models import Image, IngestItem
from annotations.services.projects import project_update
from tests.conftest import ingest_paths

pytestmark = pytest.mark.django_db


def test_header_judgement():
    assert anatomy_finding("CHEST", "PA") is None
    assert anatomy_finding("", "") is None  # absent tags are not judged
    assert anatomy_finding("HAND", "PA")[0] == "not_chest"
    assert anatomy_finding("CHEST", "LL")[0] == "lateral_view"


@pytest.fixture
def films(tmp_path):
    gen = generate_studies(tmp_path / "gen", 3, seed=4, anatomy="phantom", size=(400, 360),
                           compressed_fraction=0.0)
    paths = list(gen.files)
    for path, (part, view) in zip(paths, [("HAND", "PA"), ("CHEST", "LL"), ("CHEST", "PA")],
                                  strict=True):
        ds = pydicom.dcmread(path)
        ds.BodyPartExamined, ds.ViewPosition = part, view
        ds.save_as(path)
    return paths


def test_extremity_and_lateral_films_are_quarantined_with_a_reason(project, films):
    ingest_paths(project, films)
    reasons = sorted(IngestItem.objects.values_list("status", "reason"))
    assert reasons == [("imported", ""), ("quarantined", "lateral_view"),
                       ("quarantined", "not_chest")]
    assert Image.objects.count() == 1


@pytest.mark.parametrize("policy, imported, flagged", [("flag", 3, 2), ("accept", 3, 0)])
def test_the_project_decides(project, films, policy, imported, flagged):
    project_update(project=project, anatomy_policy=policy)
    ingest_paths(project, films)
    items = IngestItem.objects.filter(status="imported")
    assert items.count() == imported
    assert sum("flagged" in i.detail for i in items) == flagged


def test_an_unknown_policy_is_refused(project):
    from annotations.errors import DomainError

    with pytest.raises(DomainError):
        project_update(project=project, anatomy_policy="maybe")
