"""A small project in every reading state, built through the platform's services.

Eight 128x128 synthetic films (a bright square lesion on most), k = 2 readers per
image out of three, so that after a consensus run the project holds:

* images 0-3: read by both assigned readers, consensus final (2 and 3 are gold);
* image 4: read by one of its two readers only (state ``reading``);
* images 5-7: the unlabeled pool (no reader yet).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from annotations.models import Image, ModelVersion, Project, Reader
from annotations.services import readers as reader_services
from annotations.services.annotating import BoxIn, reader_annotation_record
from annotations.services.consensus import consensus_run_create, consensus_run_execute
from annotations.services.projects import project_create
from tests.conftest import ingest_paths
from tests.training.films import CLASS_NAMES, TRUTH, film

PASSWORD = "reader-pass-123"


@dataclass
class World:
    project: Project
    images: list[Image]
    readers: dict[str, Reader]
    #: image index -> codes of its assigned readers, in the order they read
    reading: dict[int, list[str]] = field(default_factory=dict)

    def reader_of_image(self, index: int, position: int = 0) -> Reader:
        return self.readers[self.reading[index][position]]

    def not_reading(self, index: int) -> Reader:
        """A reader with no assignment on that image."""
        codes = set(self.reading[index])
        return next(r for c, r in sorted(self.readers.items()) if c not in codes)


def build_world(tmp_path: Path, *, slug: str = "clinic") -> World:
    project = project_create(name="Clinic chest films", slug=slug, class_names=CLASS_NAMES,
                             readers_per_image=2)
    paths = []
    for i in range(8):
        path = tmp_path / "films" / f"film{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), film(300 + i, lesion=i % 4 != 3))
        paths.append(path)
    ingest_paths(project, paths)
    # eager ingest in input order: ids follow the films
    images = list(Image.objects.filter(project=project).order_by("id"))
    assert len(images) == 8
    rs = {code: reader_services.reader_create(email=f"{code.lower()}@example.org", code=code,
                                              password=PASSWORD)
          for code in ("R1", "R2", "R3")}
    reader_services.assignments_create(project=project, images=images[:5])
    world = World(project=project, images=images, readers=rs)
    for i, image in enumerate(images[:5]):
        codes = sorted(image.assignments.values_list("reader__code", flat=True))
        world.reading[i] = codes
        for j, code in enumerate(codes):
            if i == 4 and j == 1:
                continue  # the second reader of image 4 has not read it yet
            lesion = i % 4 != 3
            box = (TRUTH + 2 * j + np.array([0, 0, 3 * (i == 1) * j, 0])).tolist()
            reader_annotation_record(
                image=image, reader=rs[code], trigger_consensus=False,
                boxes=[BoxIn("Pleural effusion", *box)] if lesion else [],
                image_labels=[] if lesion else ["No finding"])
    Image.objects.filter(pk__in=[images[2].pk, images[3].pk]).update(is_gold=True)
    run = consensus_run_execute(run_id=consensus_run_create(project=project, strategy="wbf",
                                                            enqueue=False).pk)
    assert run.status == "done", run.reason
    for image in images:
        image.refresh_from_db()
    return world


def register_version(project: Project, trained, model_dir: Path, name: str = "clinic-v1",
                     metrics: dict | None = None) -> ModelVersion:
    """Publish a trained model directory as the project's promoted version."""
    shutil.copytree(trained.directory, model_dir / name)
    version = ModelVersion.objects.create(
        project=project, name=name, sha256=trained.sha256,
        config=(trained.directory / "config.yaml").read_text(), metrics=metrics or {
            "map_40": 0.61, "ap_40": {"Nodule/Mass": 0.4, "Pleural effusion": 0.82},
            "coco_map": 0.33, "froc": {"0.125": 0.2, "0.25": 0.4, "0.5": 0.55, "1": 0.7,
                                       "2": 0.8, "4": 0.9, "8": 0.92},
            "froc_score": 0.64})
    from annotations.services.model_registry import version_promote

    version_promote(version=version, reason="test")
    return version


def seed_feedback(world: World, version: str) -> None:
    """What readers did with a version's pre-labels on images 0 and 1: 2 accepted,
    1 adjusted, 1 rejected, 1 missed (Pleural effusion), and two ratings."""
    from annotations.models import (
        LabelClass,
        Prediction,
        PredictionFeedback,
        PredictionRating,
        ReaderAnnotation,
    )

    effusion = LabelClass.objects.get(project=world.project, name="Pleural effusion")
    outcomes = [["accepted", "adjusted", "missed"], ["accepted", "rejected"]]
    for index, kinds in enumerate(outcomes):
        image = world.images[index]
        pred = Prediction.objects.create(image=image, model_version=version, score=0.8, boxes=[
            {"label": "Pleural effusion", "box": TRUTH.tolist(), "score": 0.8}])
        reader = world.reader_of_image(index)
        annotation = ReaderAnnotation.objects.get(image=image, reader=reader, is_current=True)
        PredictionFeedback.objects.bulk_create(
            PredictionFeedback(prediction=pred, annotation=annotation, reader=reader,
                               model_version=version, outcome=kind, label_class=effusion,
                               iou=0.9 if kind != "missed" else 0.0)
            for kind in kinds)
        PredictionRating.objects.create(prediction=pred, reader=reader, useful=index == 0,
                                        comment=["Found the effusion", "Box far too large"][index])


def promote_tiny_classifier(project: Project) -> ModelVersion:
    """Train the image classifier (tiny, 5 iterations) on the project's final labels
    through a training run, and promote it whatever the gold set says: the tests that
    use it are about serving a classifier, not about its quality."""
    import torch

    from annotations.services.model_registry import version_promote
    from annotations.services.training import training_run_create, training_run_execute

    torch.set_num_threads(1)
    run = training_run_execute(run_id=training_run_create(project=project, enqueue=False, params={
        "task": "classifier", "preset": "tiny", "max_iter": 5, "val_fraction": 0.0}).pk)
    assert run.status == "done", run.reason
    version = ModelVersion.objects.get(pk=run.model_version_id)
    if not version.promoted:
        version_promote(version=version, reason="test")
    return version
