"""The image-level classifier's data and gold evaluation, for training runs with
``"task": "classifier"`` (``services.training`` runs them through the same lifecycle,
registry and promotion as the detector).

Targets come from the final labels, one column per taxonomy class in ``class_id``
order: an image-level class is positive when the final label names it, a box class
when the final label has a box of it (so a box-only project, VinDr-CXR style, still
trains "which findings are on this film" and "No finding"), and "No finding" when
the final label says so.  Gold metrics: AUROC per class and macro, and at the 0.5
operating point sensitivity, specificity, precision, recall and F1
(``training.classifier_metrics``, scikit-learn).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from annotations.consensus import ConsensusResult
from annotations.errors import DomainError
from annotations.models import Image, ModelVersion, Project
from annotations.services.labels import final_results
from annotations.services.storage import model_dir, read_display


def classifier_classes(project: Project) -> list[tuple[int, str, bool]]:
    """(class_id, name, image_level) of every class the classifier predicts."""
    return list(project.label_classes.order_by("class_id")
                .values_list("class_id", "name", "image_level"))


def classifier_targets(classes: Sequence[tuple[int, str, bool]],
                       labels: Sequence[ConsensusResult]) -> np.ndarray:
    """``(N, C)`` 0/1 targets of final labels (see the module docstring)."""
    y = np.zeros((len(labels), len(classes)), dtype=np.float32)
    for i, res in enumerate(labels):
        present = {int(c) for c in res.classes}
        for j, (class_id, name, image_level) in enumerate(classes):
            y[i, j] = float(name in res.image_labels if image_level else class_id in present)
    return y


class LazyDisplays(Sequence):
    """The display derivatives of ``images``, read from storage when indexed (a training
    or an evaluation never holds every film in memory)."""

    def __init__(self, images: Sequence[Image]) -> None:
        self.images = list(images)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [read_display(i) for i in self.images[index]]
        return read_display(self.images[index])


def classifier_gold_report(*, version: ModelVersion) -> dict[str, Any]:
    """The classifier version's gold-set metrics (its files must exist)."""
    from training.classifier import Classifier
    from training.classifier_metrics import classifier_metrics

    project = version.project
    labels = final_results(project)
    gold = list(Image.objects.filter(project=project, is_gold=True,
                                     pseudo_id__in=list(labels)).order_by("pseudo_id"))
    if not gold:
        raise DomainError("no_gold_set", "the project has no gold images with final labels")
    model = Classifier.from_dir(model_dir(version.name),
                                expected_sha256=version.sha256)
    classes = classifier_classes(project)
    if [name for _, name, _ in classes] != model.class_names:
        raise DomainError("invalid_model", "the classifier's classes are not the project's")
    scores = model.predict(LazyDisplays(gold))
    truth = classifier_targets(classes, [labels[i.pseudo_id] for i in gold])
    report = classifier_metrics(truth, scores, model.class_names)
    report["gold_images"] = len(gold)
    return report


def train_classifier_model(*, params: Mapping[str, Any], project: Project,
                           images: Sequence[Image], labels: Mapping[str, ConsensusResult],
                           report):
    """Train on ``images`` (their display derivatives); returns ``(model, cfg)``.

    ``report(progress)`` is the run's heartbeat: it raises when the run was cancelled or
    lost, which stops the training between two iterations.
    """
    from training.classifier import classifier_config, train_classifier

    classes = classifier_classes(project)
    cfg = classifier_config([name for _, name, _ in classes], preset=params["preset"])
    targets = classifier_targets(classes, [labels[i.pseudo_id] for i in images])
    model = train_classifier(
        cfg, LazyDisplays(images), targets, max_iter=int(params["max_iter"]),
        batch_size=int(params["ims_per_batch"]), base_lr=params.get("base_lr"),
        seed=params.get("seed"), progress=report,
        progress_period=max(1, int(params["max_iter"]) // 50))
    return model, cfg
