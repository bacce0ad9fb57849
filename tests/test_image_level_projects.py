"""Projects that read image-level findings: created through the API (a preset or custom
classes, with or without boxes), decided by consensus, reported by agreement, refused
by the detector's training with a clear error, and shown to each reader only as their
own estimates."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from annotations.label_studio.config import label_config, parse_label_config
from annotations.models import Image, Project
from annotations.services import readers
from annotations.services.agreement import agreement_report
from annotations.services.annotating import reader_annotation_record
from annotations.services.consensus import consensus_run_create, consensus_run_execute
from annotations.services.exports import project_taxonomy
from annotations.services.my_reading import my_reliability
from annotations.taxonomy import NO_FINDING
from tests.conftest import ingest_paths, write_png

pytestmark = pytest.mark.django_db


def admin_client(admin_user) -> APIClient:
    client = APIClient()
    client.force_authenticate(admin_user)
    return client


def test_create_a_classification_project_from_a_preset_and_from_names(admin_user):
    client = admin_client(admin_user)
    r = client.post("/api/projects/", {"name": "Nine", "taxonomy_preset": "lung_disease_9"},
                    format="json")
    assert r.status_code == 201, r.content
    classes = r.json()["label_classes"]
    assert [c["name"] for c in classes][:3] == ["Edema", "Pneumonia", "Tuberculosis"]
    assert len(classes) == 9 and all(c["image_level"] for c in classes)
    r = client.post("/api/projects/", {"name": "Mixed", "class_names": ["Nodule/Mass"],
                                       "image_classes": ["Pneumonia"]}, format="json")
    assert r.status_code == 201, r.content
    kinds = {c["name"]: c["image_level"] for c in r.json()["label_classes"]}
    assert kinds == {"Nodule/Mass": False, "Pneumonia": True, NO_FINDING: True}
    config = parse_label_config(label_config(project_taxonomy(Project.objects.get(
        slug="mixed"))))
    assert config.box_classes == ("Nodule/Mass",)
    assert config.image_classes == ("Pneumonia", NO_FINDING)


@pytest.mark.parametrize("body, message", [
    ({"name": "Dup", "class_names": ["Edema"], "image_classes": ["Edema"]}, "unique"),
    ({"name": "Only nf", "image_classes": [NO_FINDING]}, "at least one finding"),
    ({"name": "Clash", "image_classes": ["A b", "a_b"]}, "letters or digits"),
])
def test_bad_image_classes_are_refused_and_nothing_is_created(admin_user, body, message):
    r = admin_client(admin_user).post("/api/projects/", body, format="json")
    assert r.status_code == 400 and message in r.json()["error"]["message"], r.content
    assert not Project.objects.exists()


@pytest.fixture
def six(admin_user, tmp_path):
    from annotations.services.projects import project_create

    project = project_create(name="Six", slug="six", taxonomy_preset="cxr_6",
                             readers_per_image=3)
    ingest_paths(project, [write_png(tmp_path / f"f{i}.png", seed=i) for i in range(4)])
    rs = {c: readers.reader_create(email=f"{c.lower()}@example.org", code=c)
          for c in ("R1", "R2", "R3")}
    readers.assignments_create(project=project)
    return project, rs, list(Image.objects.filter(project=project).order_by("id"))


def test_training_the_detector_on_a_classification_project_is_refused(six, admin_user):
    project, *_ = six
    r = admin_client(admin_user).post(f"/api/projects/{project.slug}/training-runs/", {},
                                      format="json")
    assert r.status_code == 400 and r.json()["error"]["code"] == "no_box_classes", r.content
    assert not project.training_runs.exists()


PICKS = [  # per image: what R1, R2, R3 picked
    (["Cardiomegaly"], ["Cardiomegaly"], [NO_FINDING]),
    (["Edema"], [NO_FINDING], [NO_FINDING]),
    (["Cardiomegaly", "Edema"], ["Cardiomegaly", "Edema"], ["Cardiomegaly"]),
    ([NO_FINDING], [NO_FINDING], [NO_FINDING]),
]


def test_consensus_agreement_and_my_estimates_on_image_labels(six):
    project, rs, images = six
    for image, picks in zip(images, PICKS, strict=True):
        for code, labels in zip(("R1", "R2", "R3"), picks, strict=True):
            reader_annotation_record(image=image, reader=rs[code], boxes=[],
                                     image_labels=labels, trigger_consensus=False)
    run = consensus_run_execute(run_id=consensus_run_create(
        project=project, strategy="majority", enqueue=False).pk)
    assert run.status == "done", run.reason
    labels = {row.image_id: sorted(row.image_labels) for row in run.images.all()}
    assert [labels[i.pk] for i in images] == [
        ["Cardiomegaly"], [NO_FINDING], ["Cardiomegaly", "Edema"], [NO_FINDING]]
    report = agreement_report(project=project, run=run)
    kappa = {k["label"]: k for k in report["image_kappa"]}
    assert kappa[NO_FINDING]["n_images"] == 4 and kappa["Atelectasis"]["kappa"] is None
    rows = {(r["reader"], r["label"]): r for r in report["image_reader_vs_consensus"]}
    assert rows[("R1", "Edema")]["fp"] == 1 and rows[("R1", "Edema")]["tp"] == 1
    assert rows[("R3", "Cardiomegaly")]["fn"] == 1
    # readers far apart on findings go to adjudication (pairwise Jaccard of their picks:
    # 1/3 on the first two images), agreeing ones are final
    from annotations.models import Adjudication

    routed = set(Adjudication.objects.filter(image__project=project)
                 .values_list("image_id", flat=True))
    assert routed == {images[0].pk, images[1].pk}
    # a reader sees their own image-level estimates, over final images, and no one else's
    mine = my_reliability(rs["R3"], project)
    assert mine["final_images"] == 2
    found = {row["label"]: row for row in mine["image_labels"]}
    assert {"Cardiomegaly", "Edema"} <= set(found)
    assert 0.0 <= found["Cardiomegaly"]["sensitivity"] <= 1.0
    assert "R1" not in str(mine) and "R2" not in str(mine)


def test_admin_turns_the_two_stage_gate_on_and_bad_values_change_nothing(six, admin_user):
    project, *_ = six
    client = admin_client(admin_user)
    r = client.patch(f"/api/projects/{project.slug}/", {"two_stage": True,
                                                         "two_stage_threshold": 0.8},
                     format="json")
    assert r.status_code == 200 and r.json()["two_stage"] is True, r.content
    for bad in ({"two_stage_threshold": 1.5}, {"two_stage_rescale": "maybe"}):
        assert client.patch(f"/api/projects/{project.slug}/", bad,
                            format="json").status_code == 400
    project.refresh_from_db()
    assert project.two_stage and project.two_stage_threshold == 0.8
    assert not project.two_stage_rescale
