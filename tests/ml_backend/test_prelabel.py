"""Batch pre-labelling through the platform's task path."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from django.core.management import call_command

from annotations.models import Image, Prediction
from annotations.services import ingest
from annotations.services.prelabeling import prelabel_run_create, prelabel_run_execute
from tests.conftest import ingest_paths
from tests.ml_backend.servers import model_dir_with, register_promoted
from tests.training.films import TRUTH, film, iou

pytestmark = pytest.mark.django_db


@pytest.fixture
def films(project, tmp_path, settings, trained_version):
    settings.MODEL_DIR = model_dir_with(trained_version.directory, tmp_path)
    register_promoted(project, "v1", trained_version.sha256)
    paths = []
    for i in range(5):
        path = tmp_path / "films" / f"f{i}.png"
        path.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(path), film(100 + i, lesion=i % 2 == 0))
        paths.append(path)
    ingest_paths(project, paths)
    return project


def test_prelabel_stores_boxes_probabilities_and_uncertainty(films):
    run = prelabel_run_execute(run_id=prelabel_run_create(project=films, enqueue=False).pk,
                               batch_size=2)
    assert run.status == "done" and run.done == run.total == 5
    preds = {p.image.source_key: p for p in Prediction.objects.select_related("image")}
    assert len(preds) == 5 and {p.model_version for p in preds.values()} == {"v1"}
    lesion = Prediction.objects.get(image__source_key=ingest.source_key("f0.png"))
    top = max(lesion.boxes, key=lambda b: b["score"])
    assert top["label"] == "Pleural effusion" and iou(np.array(top["box"]), TRUTH) > 0.5
    assert len(top["probs"]) == 3 and sum(top["probs"]) == pytest.approx(1.0, abs=1e-5)
    assert set(lesion.uncertainty) >= {"entropy_max", "entropy_mean", "entropy_sum",
                                       "least_confidence_max"}


def test_rerun_updates_never_duplicates(films):
    for _ in range(2):
        prelabel_run_execute(run_id=prelabel_run_create(project=films, enqueue=False).pk)
    assert Prediction.objects.count() == Image.objects.count() == 5


def test_command_with_progress(films, capsys):
    call_command("prelabel", project="test", model_version="v1")
    out = capsys.readouterr()
    assert "5 images pre-labelled with v1" in out.out
    assert Prediction.objects.count() == 5


def test_unknown_version_is_refused(films):
    from annotations.errors import DomainError

    with pytest.raises(DomainError) as err:
        prelabel_run_create(project=films, model_version="v999", enqueue=False)
    assert err.value.code == "not_found"
