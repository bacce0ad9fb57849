"""Quick read: the promoted model's boxes on one image, without a reading workflow.

An uploaded DICOM goes through the same load, validation, de-identification and
rendering as ingest, in a private temporary folder that is removed before the
response leaves; nothing of it is kept unless the user asks to add it to the
project, in which case it is staged as an ordinary one-file ingest batch.

The model returns every box above a low floor (``QUICK_READ_MIN_SCORE``) so the
page's sensitivity slider can redraw at any threshold without another request.
"""

from __future__ import annotations

import base64
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings

from annotations.errors import DomainError
from annotations.imaging.loader import load_file
from annotations.imaging.render import encode_png, render
from annotations.models import ModelVersion, Project
from annotations.selectors import image_list_visible, model_version_promoted
from annotations.services import explanations, ingest
from annotations.services.audit import audit_record
from annotations.services.image_state import model_output_visible
from annotations.services.storage import model_dir, read_display, scratch_dir

logger = logging.getLogger(__name__)

#: One loaded model per process: (directory, checksum) -> Detector.
_LOADED: dict[tuple[str, str], Any] = {}


def _promoted(project: Project) -> ModelVersion:
    version = model_version_promoted(project)  # the registry's, per project
    if version is None:
        raise DomainError("not_found", f"project {project.slug!r} has no promoted model yet")
    return version


def _detector(version: ModelVersion) -> Any:
    from training.detector import CONFIG_FILE, Detector

    try:
        path = model_dir(version.name)
    except DomainError:
        path = None
    if path is None or not (path / CONFIG_FILE).is_file():
        raise DomainError("unavailable", f"the files of model {version.name} are missing")
    key = (str(path), version.sha256)
    if key not in _LOADED:
        _LOADED.clear()

        def configure(cfg: Any) -> None:
            cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = settings.QUICK_READ_MIN_SCORE

        _LOADED[key] = Detector.from_dir(path, expected_sha256=version.sha256, batch_size=1,
                                         configure=configure)
    return _LOADED[key]


def _predict(version: ModelVersion, display: np.ndarray, scale: tuple[float, float]
             ) -> list[dict[str, Any]]:
    det = _detector(version).predict([display])[0]
    names = dict(version.project.label_classes.values_list("class_id", "name"))
    colors = dict(version.project.label_classes.values_list("class_id", "color"))
    sx, sy = scale
    out = []
    order = np.argsort(-det.scores, kind="stable")
    for i in order.tolist():
        b = det.boxes[i].tolist()
        cid = int(det.classes[i])
        out.append({"label": names.get(cid, str(cid)), "color": colors.get(cid, "#ff0000"),
                    "score": float(det.scores[i]), "box": [float(v) for v in b],
                    "box_original": [b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy]})
    return out


def _gated(project: Project, predictions: list[dict[str, Any]],
           findings: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The project's two-stage gate on quick-read boxes (as pre-labels get it)."""
    if not project.two_stage or findings is None or findings["p_normal"] is None:
        return predictions
    from training.two_stage import gate_boxes

    kept, g = gate_boxes(predictions, findings["p_normal"], project.two_stage_threshold,
                         rescale=project.two_stage_rescale)
    findings["called_normal"] = g.called_normal
    return kept


def _data_url(img8: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(encode_png(img8, 3)).decode()


def _from_upload(project: Project, upload: Any, workdir: Path) -> tuple[np.ndarray, Any, str]:
    size = getattr(upload, "size", None) or 0
    if size > settings.QUICK_READ_MAX_BYTES:
        raise DomainError("too_large", f"the file is larger than "
                          f"{settings.QUICK_READ_MAX_BYTES // (1024 * 1024)} MiB", status=413)
    path = workdir / "upload.bin"
    with path.open("wb") as fh:
        for chunk in upload.chunks():
            fh.write(chunk)
    loaded = load_file(path, ingest.project_limits(project))  # raises with a quarantine reason
    _, _, image_id = ingest.loaded_deidentify(loaded, project)
    long_side = project.display_long_side or settings.DISPLAY_LONG_SIDE
    rendered = render(loaded.pixels, loaded.spec, long_side=long_side, use_clahe=project.clahe)
    return rendered.display, loaded, image_id


def quick_read(*, user: Any, project: Project, upload: Any = None, image_id: str | None = None,
               keep: bool = False) -> dict[str, Any]:
    """Boxes of the project's promoted model on an uploaded DICOM or a stored image."""
    version = _promoted(project)
    if (upload is None) == (image_id is None):
        raise DomainError("invalid_request", "give either a file or an image id")
    kept = None
    if image_id is not None:
        image = image_list_visible(user, project).filter(pseudo_id=image_id).first()
        if image is None:
            raise DomainError("not_found", "no such image in this project")
        if not model_output_visible(user, image):
            # the same rule as the viewer: no model boxes on an image still being read
            # unless the project shows pre-labels to its readers
            raise DomainError("forbidden", "the model's boxes on this image are hidden from "
                              "readers until its consensus is final", status=403)
        display = read_display(image)
        width, height, pseudo = image.width, image.height, image.pseudo_id
        predictions = _predict(version, display, (width / display.shape[1],
                                                  height / display.shape[0]))
    else:
        workdir = Path(tempfile.mkdtemp(prefix="quickread-", dir=_scratch()))
        try:
            display, loaded, pseudo = _from_upload(project, upload, workdir)
            width, height = loaded.width, loaded.height
            predictions = _predict(version, display, (width / display.shape[1],
                                                      height / display.shape[0]))
            if keep:  # only once the read worked
                kept = _keep(project, workdir / "upload.bin", user)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    findings = explanations.findings(project, display)
    predictions = _gated(project, predictions, findings)
    audit_record(action="quick_read", actor=user, project=project,
                 detail={"model_version": version.name, "source": "upload" if upload else
                         "image", "kept": bool(kept), "boxes": len(predictions)})
    return {
        "image_id": pseudo if (image_id or kept) else None,
        "model_version": version.name, "image": _data_url(display),
        "display_width": int(display.shape[1]), "display_height": int(display.shape[0]),
        "width": int(width), "height": int(height),
        "min_score": settings.QUICK_READ_MIN_SCORE,
        "predictions": predictions, "kept": kept, "findings": findings,
        "two_stage": bool(project.two_stage and findings is not None),
    }


#: A scratch folder older than this is a leftover of a killed request: removed.
STALE_SECONDS = 3600


def _scratch() -> Path:
    """The scratch root, swept of folders a killed request could not remove."""
    path = scratch_dir("quick-read")
    cutoff = time.time() - STALE_SECONDS
    for old in path.glob("quickread-*"):
        try:
            if old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)
        except FileNotFoundError:  # another request swept it first
            pass
    return path


def _keep(project: Project, path: Path, user: Any) -> dict[str, Any]:
    """Stage the upload as a one-file ingest batch (the normal path decides the rest)."""
    batch = ingest.ingest_batch_create(project=project, inputs=[path], actor=user,
                                       source="quick_read")
    return {"batch": batch.pk}
