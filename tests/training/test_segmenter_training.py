"""The mask model (MONAI U-Net, tiny preset) through the training-run machinery on CPU:
final masks from a consensus run of CT-derived films, a registered segmenter version with
gold Dice and HD95, promotion beside the detector, pre-labels as brush regions readers
can correct, and refusals by name."""

from __future__ import annotations

import pytest

from annotations.errors import DomainError
from annotations.imaging.synthetic import generate_studies
from annotations.label_studio.masks import rle_to_mask
from annotations.models import (
    Image,
    MaskFeedback,
    ModelVersion,
    Prediction,
    PredictionFeedback,
    TrainingRun,
    Workspace,
    WorkspaceTask,
)
from annotations.services import readers
from annotations.services.annotating import MaskIn, reader_annotation_record
from annotations.services.consensus import consensus_run_create, consensus_run_execute
from annotations.services.feedback import feedback_record, mask_feedback_summary
from annotations.services.ingest import source_key
from annotations.services.prelabeling import prelabel_run_create, prelabel_run_execute
from annotations.services.prelabels import prelabel_for
from annotations.services.projects import project_create
from annotations.services.segmenter_training import final_masks
from annotations.services.storage import mask_read
from annotations.services.training import training_run_create, training_run_execute
from tests.conftest import ingest_paths

pytestmark = pytest.mark.django_db

STRUCTURES = ("Right lung", "Left lung", "Heart")


@pytest.fixture
def painted(tmp_path, settings):
    """8 CT-derived films at 256 px, their exact anatomy painted by two readers; 2 gold."""
    settings.MODEL_DIR = tmp_path / "models"
    project = project_create(name="Seg", slug="seg", readers_per_image=2,
                             mask_preset="anatomy")
    gen = generate_studies(tmp_path / "films", 8, seed=11, anatomy="ct", size=(256, 256))
    ingest_paths(project, gen.files)
    truth = {source_key(f.name): m for f, m in zip(gen.files, gen.masks, strict=True)}
    rs = [readers.reader_create(email=f"seg{i}@example.org", code=f"S{i}") for i in (1, 2)]
    images = list(Image.objects.filter(project=project).order_by("id"))
    assert len(images) == 8
    readers.assignments_create(project=project, images=images)
    by_key = {}
    for image in images:
        masks = truth[image.source_key]
        by_key[image.pk] = masks
        for r in rs:
            reader_annotation_record(image=image, reader=r, boxes=[], trigger_consensus=False,
                                     masks=[MaskIn(n, masks[n]) for n in STRUCTURES])
    Image.objects.filter(pk__in=[i.pk for i in images[6:]]).update(is_gold=True)
    run = consensus_run_execute(run_id=consensus_run_create(project=project, strategy="wbf",
                                                            enqueue=False).pk)
    assert run.status == "done", run.reason
    return project, images, by_key


def test_final_masks_are_the_consensus_masks(painted):
    project, images, truth = painted
    masks = final_masks(project)
    assert set(masks) == {i.pseudo_id for i in images}
    assert set(masks[images[0].pseudo_id]) == set(STRUCTURES)


def test_segmenter_trains_evaluates_is_promoted_and_prelabels(painted, settings):
    import torch

    torch.set_num_threads(1)
    project, images, truth = painted
    detector = ModelVersion.objects.create(project=project, name="seg-detector", sha256="0" * 64,
                                           config="", promoted=True, metrics={"map_40": 0.5})
    run = training_run_create(project=project, enqueue=False, params={
        "task": "segmenter", "preset": "tiny", "max_iter": 120, "ims_per_batch": 4,
        "seed": 3, "val_fraction": 0.0})
    training_run_execute(run_id=run.pk)
    run = TrainingRun.objects.get(pk=run.pk)
    assert run.status == "done", run.reason
    assert run.progress["losses"]["loss_dice_ce"] < run.progress["loss_history"][0][1]
    version = run.model_version
    assert version.kind == "segmenter" and version.promoted
    assert version.metrics["gold_images"] == 2
    assert version.metrics["mean_dice"] > 0.7, version.metrics
    heart = version.metrics["per_class"]["Heart"]
    assert heart["dice"] is not None and heart["hd95_px"] is not None
    assert ModelVersion.objects.get(pk=detector.pk).promoted  # the detector stays in service

    # pre-labels: the promoted segmenter's masks as brush regions at the display size
    pre = prelabel_run_create(project=project, model_version=version.name,
                              images=images[:2], enqueue=False)
    prelabel_run_execute(run_id=pre.pk)
    pred = Prediction.objects.get(image=images[0], model_version=version.name)
    assert set(pred.masks["classes"]) == set(STRUCTURES)
    shown = prelabel_for(images[0])
    brushes = [r for r in shown["result"] if r["type"] == "brushlabels"]
    assert {b["value"]["brushlabels"][0] for b in brushes} == set(STRUCTURES)
    lung = next(b for b in brushes if b["value"]["brushlabels"][0] == "Right lung")
    m = rle_to_mask(lung["value"]["rle"], lung["original_width"], lung["original_height"])
    exact = truth[images[0].pk]["Right lung"]
    assert m.shape == exact.shape
    assert 2 * (m & exact).sum() / (m.sum() + exact.sum()) > 0.6
    assert shown["mask_prediction"] == pred and shown["prediction"] is None

    # feedback: a reader shown these masks keeps the heart as painted, redraws the lungs
    reader = readers.reader_create(email="seg3@example.org", code="S3")
    ws = Workspace.objects.create(project=project, reader=reader, ls_project_id=9001)
    WorkspaceTask.objects.create(workspace=ws, image=images[0], ls_task_id=9001,
                                 mask_prediction=pred)
    painted_heart = mask_read(pred.masks["classes"]["Heart"]["path"])
    annotation, _ = reader_annotation_record(
        image=images[0], reader=reader, boxes=[], trigger_consensus=False,
        masks=[MaskIn("Heart", painted_heart), MaskIn("Right lung", exact)])
    assert feedback_record(annotation) == 3
    got = {f.mask_class.name: f for f in MaskFeedback.objects.filter(reader=reader)}
    assert got["Heart"].dice == pytest.approx(1.0)
    assert 0.6 < got["Right lung"].dice < 1.0
    assert got["Left lung"].dice == 0.0 and got["Left lung"].read_area == 0  # removed
    assert not PredictionFeedback.objects.filter(reader=reader).exists()  # no box feedback
    summary = {r["mask_class"]: r for r in mask_feedback_summary(project)}
    assert summary["Heart"]["unchanged"] == 1 and summary["Heart"]["model_version"] == \
        version.name


def test_segmenter_runs_are_refused_by_name(painted):
    project, *_ = painted
    with pytest.raises(DomainError, match="not a segmenter preset"):
        training_run_create(project=project, enqueue=False,
                            params={"task": "segmenter", "preset": "densenet121"})
    plain = project_create(name="Boxes", slug="boxes")
    with pytest.raises(DomainError, match="no mask classes"):
        training_run_create(project=plain, enqueue=False, params={"task": "segmenter"})
