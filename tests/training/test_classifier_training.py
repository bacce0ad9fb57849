"""The image-level classifier through the training-run machinery on CPU (tiny preset):
targets from final labels, progress, a registered classifier version with gold AUROC,
promotion that leaves the project's detector alone, and refusals by name."""

from __future__ import annotations

import cv2
import pytest

from annotations.errors import DomainError
from annotations.models import Image, ModelVersion, TrainingRun
from annotations.services import ingest, readers
from annotations.services.annotating import BoxIn, reader_annotation_record
from annotations.services.classifier_training import classifier_classes, classifier_targets
from annotations.services.consensus import consensus_run_create, consensus_run_execute
from annotations.services.labels import final_results
from annotations.services.model_registry import version_rollback
from annotations.services.projects import project_create
from annotations.services.training import training_run_create, training_run_execute
from tests.training.films import TRUTH, film

pytestmark = pytest.mark.django_db


@pytest.fixture
def labelled(tmp_path, settings):
    """16 films, lesion on 2 of 3: readers box it and pick "Pneumonia"; 4 are gold."""
    settings.MODEL_DIR = tmp_path / "models"
    project = project_create(name="Cls", slug="cls", class_names=["Pleural effusion"],
                             image_classes=["Pneumonia"], readers_per_image=2)
    paths = []
    for i in range(16):
        path = tmp_path / "films" / f"film{i:02d}.png"
        path.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(path), film(500 + i, lesion=i % 3 != 2))
        paths.append(path)
    batch = ingest.ingest_batch_create(project=project, inputs=paths)
    from annotations.tasks import ingest_file

    for item_id in batch.items.values_list("id", flat=True):
        ingest_file.delay(item_id=item_id)
    rs = [readers.reader_create(email=f"cls{i}@example.org", code=f"C{i}") for i in (1, 2)]
    images = list(Image.objects.filter(project=project).order_by("id"))
    readers.assignments_create(project=project, images=images)
    for k, image in enumerate(images):
        for j, r in enumerate(rs):
            if k % 3 == 2:
                reader_annotation_record(image=image, reader=r, boxes=[],
                                         image_labels=["No finding"], trigger_consensus=False)
            else:
                reader_annotation_record(image=image, reader=r, trigger_consensus=False,
                                         image_labels=["Pneumonia"],
                                         boxes=[BoxIn("Pleural effusion", *(TRUTH + j))])
    Image.objects.filter(pk__in=[i.pk for i in images[12:]]).update(is_gold=True)
    run = consensus_run_execute(run_id=consensus_run_create(project=project, strategy="wbf",
                                                            enqueue=False).pk)
    assert run.status == "done", run.reason
    return project, images


def test_targets_follow_the_final_labels(labelled):
    project, images = labelled
    classes = classifier_classes(project)
    assert [name for _, name, _ in classes] == ["Pleural effusion", "Pneumonia", "No finding"]
    labels = final_results(project)
    y = classifier_targets(classes, [labels[i.pseudo_id] for i in images[:3]])
    assert y.tolist() == [[1, 1, 0], [1, 1, 0], [0, 0, 1]]


def test_classifier_trains_registers_and_is_promoted_beside_the_detector(labelled, settings):
    import torch

    from training.classifier import Classifier

    torch.set_num_threads(1)
    project, images = labelled
    detector = ModelVersion.objects.create(project=project, name="cls-detector", sha256="0" * 64,
                                           config="", promoted=True, metrics={"map_40": 0.5})
    run = training_run_create(project=project, enqueue=False, params={
        "task": "classifier", "preset": "tiny", "max_iter": 80, "ims_per_batch": 4,
        "val_fraction": 0.0, "seed": 3})
    run = training_run_execute(run_id=run.pk)
    assert run.status == TrainingRun.Status.DONE, run.reason
    assert run.progress["iteration"] == 80 and run.progress["loss_history"]
    version = run.model_version
    assert version.kind == "classifier" and version.promoted
    metrics = version.metrics
    assert metrics["gold_images"] == 4 and set(metrics["per_class"]) == {
        "Pleural effusion", "Pneumonia", "No finding"}
    assert metrics["macro_auroc"] is not None
    assert {"sensitivity", "specificity", "precision", "recall", "f1"} <= set(
        metrics["per_class"]["Pneumonia"])
    assert len(version.train_images) == 12  # the gold films never trained on
    detector.refresh_from_db()
    assert detector.promoted  # one promoted version per kind
    # the model learnt the films: the lesion films score higher than the normal ones
    model = Classifier.from_dir(settings.MODEL_DIR / version.name,
                                expected_sha256=version.sha256)
    p = model.predict([film(900 + i, lesion=i % 2 == 0) for i in range(8)])
    col = model.class_names.index("Pneumonia")
    assert p[0::2, col].min() > p[1::2, col].max(), p[:, col]
    nf = model.class_names.index("No finding")
    assert p[1::2, nf].mean() > p[0::2, nf].mean()
    # nothing to roll back to among classifiers; the detector stays as it is
    with pytest.raises(DomainError):
        version_rollback(project=project, kind="classifier")
    assert ModelVersion.objects.get(name="cls-detector").promoted


def test_classifier_params_are_checked_by_name(labelled):
    project, _ = labelled
    with pytest.raises(DomainError) as err:
        training_run_create(project=project, enqueue=False,
                            params={"task": "classifier", "preset": "r50_fpn"})
    assert err.value.code == "invalid_params" and "preset" in err.value.message
    with pytest.raises(DomainError) as err:
        training_run_create(project=project, enqueue=False, params={"preset": "densenet121"})
    assert "detector preset" in err.value.message
    run = training_run_create(project=project, enqueue=False, params={"task": "classifier"})
    assert run.params["preset"] == "densenet121"


def test_a_classification_only_project_trains_its_classifier(tmp_path):
    project = project_create(name="Six", slug="six", taxonomy_preset="cxr_6")
    with pytest.raises(DomainError) as err:
        training_run_create(project=project, enqueue=False)
    assert err.value.code == "no_box_classes"
    run = training_run_create(project=project, enqueue=False,
                              params={"task": "classifier", "preset": "tiny"})
    assert run.status == TrainingRun.Status.PENDING
    assert len(classifier_classes(project)) == 6  # 5 findings and "No finding"


def test_two_stage_prelabels_gate_the_detectors_boxes(labelled, settings, trained_version):
    import torch

    from annotations.models import Prediction
    from annotations.services.prelabeling import prelabel_run_create, prelabel_run_execute
    from annotations.services.prelabels import prelabel_for
    from tests.webapp.world import register_version

    torch.set_num_threads(1)
    settings.PRELABEL_SCORE_THRESH = 0.05
    project, images = labelled
    register_version(project, trained_version, settings.MODEL_DIR, name="cls-det")
    run = training_run_execute(run_id=training_run_create(project=project, enqueue=False, params={
        "task": "classifier", "preset": "tiny", "max_iter": 80, "ims_per_batch": 4,
        "val_fraction": 0.0, "seed": 3}).pk)
    assert run.status == "done" and run.model_version.promoted, run.reason
    normal, lesion = images[2], images[0]

    def prelabel():
        done = prelabel_run_execute(run_id=prelabel_run_create(
            project=project, images=[normal, lesion], enqueue=False).pk)
        assert done.status == "done", done.reason
        return {i: Prediction.objects.get(image=i, model_version="cls-det")
                for i in (normal, lesion)}

    plain = prelabel()  # the switch is off: the detector's boxes as they are...
    assert plain[lesion].boxes and not plain[lesion].image_scores["gated"]
    assert all("detector_score" not in b for b in plain[lesion].boxes)
    # ...with the classifier's probabilities beside them; the image-level findings it
    # gives at least 0.5 are pre-selected for the reader (box classes stay boxes)
    probs = plain[lesion].image_scores["probs"]
    assert set(probs) == {"Pleural effusion", "Pneumonia", "No finding"}
    assert probs["Pneumonia"] >= 0.5, probs
    shown = prelabel_for(lesion, "cls-det")["result"]
    assert [r["value"]["choices"] for r in shown if r["type"] == "choices"] == [["Pneumonia"]]
    assert "explanations" not in plain[lesion].image_scores  # the overlay is off
    # with the overlay on, each finding it calls comes with where it looked
    project.explanation_prelabels = True
    project.save()
    explained = prelabel()[lesion].image_scores["explanations"]
    called = {n for n, p in probs.items() if p >= 0.5 and n != "No finding"}
    assert set(explained) == called and "Pneumonia" in called
    film_area = lesion.display_width * lesion.display_height
    # a region where the map is above half its peak: something, never the whole film
    assert all(0 < e["area"] < film_area for e in explained.values()), \
        {n: e["area"] for n, e in explained.items()}
    overlay = [r for r in prelabel_for(Image.objects.get(pk=lesion.pk), "cls-det")["result"]
               if r["from_name"] == "explanation"]
    assert sorted(r["value"]["brushlabels"][0] for r in overlay) == sorted(called)
    project.explanation_prelabels = False
    project.two_stage, project.two_stage_threshold = True, 0.5
    project.save()
    gated = prelabel()
    on_normal, on_lesion = gated[normal].image_scores, gated[lesion].image_scores
    assert on_normal["called_normal"] and gated[normal].boxes == []
    assert not on_lesion["called_normal"] and on_lesion["p_normal"] < 0.5
    assert on_lesion["classifier"] == run.model_version.name
    for before, after in zip(plain[lesion].boxes, gated[lesion].boxes, strict=True):
        assert after["score"] == after["detector_score"] == pytest.approx(before["score"])
    project.two_stage_rescale = True  # box scores times P(abnormal) as well
    project.save()
    rescaled = prelabel()
    p_normal = rescaled[lesion].image_scores["p_normal"]
    for before, after in zip(plain[lesion].boxes, rescaled[lesion].boxes, strict=True):
        assert after["detector_score"] == pytest.approx(before["score"])
        assert after["score"] == pytest.approx(before["score"] * (1 - p_normal))
    shown = prelabel_for(normal, "cls-det")["result"]
    assert [r["value"]["choices"] for r in shown if r["type"] == "choices"] == [["No finding"]]
