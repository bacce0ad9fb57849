"""The promoted models on one film, explained: the image classifier's probabilities per
finding and where it looked (Grad-CAM overlays), and where the detector looked when it
scored one of its boxes; for Quick read and the viewer.

Reads only; the classifier version is verified against the registry's digest when it
is loaded, and one version is kept loaded per process (a version's files never change).
The viewer's overlay follows the viewer's own blinding: whoever may see the model's
layer of an image may see where the model looked on it, nobody else.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from annotations.errors import DomainError
from annotations.imaging.render import encode_png
from annotations.models import ModelVersion, Project
from annotations.selectors import image_list_visible
from annotations.services.image_state import model_output_visible
from annotations.services.storage import model_dir, read_display
from annotations.taxonomy import NO_FINDING

#: Grad-CAM maps are computed for the most probable findings only (one backward pass
#: each: DenseNet-121 at 512 px takes about a second per class on a CPU).
HEATMAP_CLASSES = 3

_CLASSIFIERS: dict[tuple[str, str], Any] = {}


def promoted_classifier(project: Project) -> tuple[ModelVersion, Any] | None:
    """(version, loaded Classifier) of the project's promoted classifier, or None."""
    version = ModelVersion.objects.filter(project=project, kind="classifier",
                                          promoted=True).first()
    if version is None:
        return None
    from training.classifier import Classifier

    key = (version.name, version.sha256)
    if key not in _CLASSIFIERS:
        _CLASSIFIERS.clear()  # keep one classifier in memory
        _CLASSIFIERS[key] = Classifier.from_dir(model_dir(version.name),
                                                expected_sha256=version.sha256)
    return version, _CLASSIFIERS[key]


def _png_url(img: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(encode_png(img, 3)).decode()


def heatmaps(model: Any, display: np.ndarray, classes: list[str]) -> dict[str, str]:
    """Grad-CAM overlays (display pixels, PNG data URLs with alpha) per class."""
    from training.explain import classifier_cams, heatmap_rgba

    return {name: _png_url(heatmap_rgba(classifier_cams(model, [display], name)[0]))
            for name in classes}


def findings(project: Project, display: np.ndarray) -> dict[str, Any] | None:
    """The promoted classifier's probabilities per class on the film, the project's
    operating point, and overlays of the most probable findings (None: no classifier)."""
    loaded = promoted_classifier(project)
    if loaded is None:
        return None
    version, model = loaded
    probs = model.predict([display])[0].tolist()
    ranked = sorted(zip(model.class_names, probs, strict=True), key=lambda kv: -kv[1])
    return {"model_version": version.name, "threshold": project.two_stage_threshold,
            "probabilities": [{"label": n, "p": float(p)} for n, p in ranked],
            "p_normal": dict(zip(model.class_names, probs, strict=True)).get(NO_FINDING),
            "heatmaps": heatmaps(model, display, [n for n, _ in ranked
                                                  if n != NO_FINDING][:HEATMAP_CLASSES])}


_DETECTORS: dict[tuple[str, str], Any] = {}


def _promoted_detector(project: Project) -> tuple[ModelVersion, Any]:
    version = ModelVersion.objects.filter(project=project, kind="detector",
                                          promoted=True).first()
    if version is None:
        raise DomainError("not_found", f"project {project.slug!r} has no promoted detector")
    from training.detector import Detector

    key = (version.name, version.sha256)
    if key not in _DETECTORS:
        _DETECTORS.clear()
        _DETECTORS[key] = Detector.from_dir(model_dir(version.name),
                                            expected_sha256=version.sha256, batch_size=1)
    return version, _DETECTORS[key]


def image_heatmap(*, user: Any, image_id: str, finding: str | None = None,
                  box: int | None = None) -> dict[str, Any]:
    """Where the promoted classifier looked for ``finding`` on a stored image, or, with
    ``box`` (an index into the promoted detector's pre-label of the image), where the
    detector looked when it scored that box; for the viewer, refused exactly where the
    viewer hides the model's layer."""
    image = (image_list_visible(user).filter(pseudo_id=image_id)
             .select_related("project").first())
    if image is None:
        raise DomainError("not_found", "no such image")
    project = image.project
    if not model_output_visible(user, image):
        raise DomainError("forbidden", "the model's view of this image is hidden from "
                          "readers until its consensus is final", status=403)
    display = read_display(image)
    if box is not None:
        return _box_heatmap(image, display, box)
    loaded = promoted_classifier(project)
    if loaded is None:
        raise DomainError("not_found", f"project {project.slug!r} has no promoted classifier")
    version, model = loaded
    if finding not in model.class_names:
        raise DomainError("invalid_parameter", f"finding must be one of {model.class_names}")
    return {"finding": finding, "classifier": version.name,
            "heatmap": heatmaps(model, display, [finding])[finding]}


def _box_heatmap(image: Any, display: np.ndarray, index: int) -> dict[str, Any]:
    from training.explain import detector_box_cam, heatmap_rgba

    version, detector = _promoted_detector(image.project)
    pred = image.predictions.filter(model_version=version.name).first()
    boxes = pred.boxes if pred is not None else []
    if not 0 <= index < len(boxes):
        raise DomainError("invalid_parameter", f"box must be 0..{len(boxes) - 1} (the model "
                          f"layer's boxes)" if boxes else "the model has no box on this image")
    row = boxes[index]
    names = detector.class_names
    if row["label"] not in names:
        raise DomainError("invalid_parameter", f"box {index} is not of this detector's classes")
    sx, sy = display.shape[1] / image.width, display.shape[0] / image.height
    on_display = [row["box"][0] * sx, row["box"][1] * sy, row["box"][2] * sx, row["box"][3] * sy]
    heat = detector_box_cam(detector, display, on_display, names.index(row["label"]))
    return {"box": index, "label": row["label"], "detector": version.name,
            "heatmap": _png_url(heatmap_rgba(heat))}
