"""Label Studio's ML-backend protocol (as Label Studio 1.23.2 calls it), as plain
functions from request bodies to response bodies.

* ``GET /health`` -> ``{"status": "UP", "model_class": ..., "model_version": ...,
  "loaded_versions": [...]}``: the most recently used version (None before any),
  and every version loaded in this worker, most recent first.
* ``POST /setup`` ``{project, schema, hostname, access_token, extra_params}``
  -> ``{"model_version": ...}``: the version serving that Label Studio project
  (``"none"`` when nothing is promoted there); ``hostname`` must be the configured Label Studio
  (``CXR_ML_LABEL_STUDIO_URL``: /setup can never move the backend elsewhere), and
  ``access_token`` is kept only together with it, to fetch LS-hosted images.
* ``POST /predict`` ``{tasks: [task...], project, label_config, params}`` ->
  ``{"results": [{"result": [...regions...], "score", "model_version"}, ...]}``,
  one entry per task, in order, by the version serving ``project`` (the Label
  Studio project ``"<id>.<timestamp>"``: its platform project's promoted version,
  ``ml_backend.model_store``; 503 when there is none).  At most
  ``CXR_ML_MAX_TASKS`` tasks; every image URL must be on an allowed origin,
  checked for all tasks before anything is fetched (400).  An image that breaks
  a limit while fetched (a redirect off the allowed origins, too many bytes or
  pixels) refuses the request (422); a task whose image is merely unavailable
  gets an empty result (logged), never a failed batch.
* ``POST /webhook`` ``{"action": "START_TRAINING", "project": {...}}`` -> asks the
  platform to retrain; other actions are acknowledged and ignored.
* ``GET /versions`` -> ``{"versions": [...]}``.

Regions are built by ``annotations.label_studio.regions`` (the one mapping both
sides use): percent coordinates with the image's width/height as
``original_width``/``original_height``, a score per region and per task.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from annotations.label_studio.config import parse_label_config
from annotations.label_studio.masks import brush_region
from annotations.label_studio.regions import build_result
from annotations.taxonomy import NO_FINDING
from ml_backend.images import ImageError, ImageFetcher, ImageRefused
from ml_backend.model_store import ModelStore, NoModel
from ml_backend.origins import OriginError, OriginPolicy, origin_of, shown
from training.two_stage import gate

logger = logging.getLogger(__name__)


class ProtocolError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class BackendState:
    """What /setup told us: the Label Studio token (for the configured host only)."""

    access_token: str | None = None
    projects: dict[str, str] = field(default_factory=dict)  # project -> schema


def _require(body: Any, key: str, kind: type) -> Any:
    if not isinstance(body, Mapping):
        raise ProtocolError(400, "the body must be a JSON object")
    value = body.get(key)
    if not isinstance(value, kind):
        raise ProtocolError(400, f"'{key}' must be a {kind.__name__}")
    return value


def ls_project_of(body: Any) -> int:
    """The Label Studio project id in a request's ``project`` (``"<id>.<timestamp>"``,
    as Label Studio 1.23.2 sends it, or a bare id)."""
    if not isinstance(body, Mapping) or "project" not in body:
        raise ProtocolError(400, "'project' (the Label Studio project) is required")
    value = body["project"]
    if isinstance(value, bool):
        raise ProtocolError(400, "'project' must be \"<id>.<timestamp>\" or an id")
    text = str(value).split(".", 1)[0] if isinstance(value, str | int) else ""
    if not text.isdigit() or len(text) > 12:
        raise ProtocolError(400, "'project' must be \"<id>.<timestamp>\" or an id")
    return int(text)


def health(store: ModelStore) -> dict[str, Any]:
    loaded = store.loaded()
    return {"status": "UP", "model_class": "CXRDetectron2",
            "model_version": loaded[0] if loaded else None, "loaded_versions": loaded}


def setup(body: Any, state: BackendState, store: ModelStore,
          policy: OriginPolicy) -> dict[str, Any]:
    project = _require(body, "project", str)
    ls_project = ls_project_of(body)
    schema = _require(body, "schema", str)
    token = _label_studio_token(body, policy)
    try:
        parse_label_config(schema)
    except Exception as exc:  # the label config must be one we can answer
        raise ProtocolError(400, f"unusable label config: {exc}") from exc
    state.projects[project] = schema
    if token:
        state.access_token = token
    try:
        return {"model_version": store.model_for(ls_project).version}
    except NoModel:
        return {"model_version": "none"}


def _label_studio_token(body: Mapping, policy: OriginPolicy) -> str | None:
    """The token /setup hands over, accepted only with the configured Label Studio host.

    The host is configuration, never taken from the request: otherwise whoever
    reaches /setup decides where images are fetched and where the token goes.
    A foreign ``hostname`` is refused rather than ignored, so a misconfigured
    (or forged) connection shows at connect time, not later as missing images.
    """
    hostname, token = body.get("hostname"), body.get("access_token")
    if hostname in (None, ""):
        if token:
            raise ProtocolError(400, "access_token is only accepted together with the "
                                "configured Label Studio hostname")
        return None
    if not isinstance(hostname, str) or (token is not None and not isinstance(token, str)):
        raise ProtocolError(400, "'hostname' and 'access_token' must be strings")
    try:
        given = origin_of(hostname)
    except OriginError as exc:
        raise ProtocolError(400, f"hostname {shown(hostname)!r}: {exc}") from exc
    if policy.label_studio is None or given != policy.label_studio:
        raise ProtocolError(400, f"hostname {shown(given)} is not the Label Studio this backend "
                            f"serves ({policy.label_studio or 'none configured'}; set "
                            "CXR_ML_LABEL_STUDIO_URL to change it)")
    return token or None


def _image_urls(body: Any, fetcher: ImageFetcher, max_tasks: int) -> list[str]:
    """Every task's image URL, each on an allowed origin: checked before any fetch."""
    tasks = _require(body, "tasks", list)
    if len(tasks) > max_tasks:
        raise ProtocolError(400, f"{len(tasks)} tasks in one /predict; at most {max_tasks} "
                            "(CXR_ML_MAX_TASKS)")
    urls = []
    for i, task in enumerate(tasks):
        if not isinstance(task, Mapping) or not isinstance(task.get("data"), Mapping):
            raise ProtocolError(400, f"task {i} has no 'data' object")
        url = task["data"].get("image")
        if not isinstance(url, str):
            raise ProtocolError(400, f"task {i} has no image URL in data.image")
        try:
            fetcher.policy.resolve(url)
        except OriginError as exc:
            raise ProtocolError(400, f"task {i}: image URL {shown(url)!r} refused: "
                                f"{exc}") from exc
        urls.append(url)
    return urls


def _fetch_all(tasks: list[Any], urls: list[str], fetch: ImageFetcher) -> list[np.ndarray | None]:
    images: list[np.ndarray | None] = []
    for i, (task, url) in enumerate(zip(tasks, urls, strict=True)):
        try:
            images.append(fetch(url))
        except ImageRefused as exc:
            raise ProtocolError(422, f"task {i}: {exc}") from exc
        except ImageError as exc:
            logger.warning("task %s: image unavailable (%s)", task.get("id"), exc)
            images.append(None)
    return images


def predict(body: Any, store: ModelStore, fetch: ImageFetcher, score_threshold: float,
            max_tasks: int) -> dict[str, Any]:
    ls_project = ls_project_of(body)
    urls = _image_urls(body, fetch, max_tasks)
    try:
        served = store.model_for(ls_project)  # one answer: detector, gate, masks agree
        version, detector = store.detector_of(served)
        classifier = store.classifier(served) if detector is not None else None
        segmenter = store.segmenter(served)
    except NoModel as exc:
        raise ProtocolError(503, str(exc)) from exc
    version = version or served.segmenter
    images = _fetch_all(body["tasks"], urls, fetch)
    ready = [im for im in images if im is not None]
    detections = iter(detector.predict(ready) if ready and detector is not None else [])
    p_normal = iter(_p_normal(classifier, ready))
    painted = iter(segmenter.predict(ready) if ready and segmenter is not None else [])
    results = []
    for image in images:
        if image is None:
            results.append({"result": [], "score": 0.0, "model_version": version})
            continue
        result, scores = [], np.zeros(0)
        h, w = image.shape[:2]
        if detector is not None:
            det = next(detections)
            det_scores, det_keep, labels = det.scores, np.ones(len(det.scores), bool), []
            if classifier is not None:  # the project's two-stage gate (training.two_stage)
                g = gate(det.scores, next(p_normal), served.threshold, rescale=served.rescale)
                det_scores, det_keep = g.scores, g.keep
                labels = [NO_FINDING] if g.called_normal else []
            keep = det_keep & (det_scores >= score_threshold)
            names = [detector.class_names[int(c)] for c in det.classes[keep]]
            scores = det_scores[keep].astype(float)
            result = build_result(det.boxes[keep], names, original_width=w, original_height=h,
                                  scores=scores.tolist(), image_labels=labels)
        if segmenter is not None:
            result += _brushes(segmenter.class_names, next(painted))
        results.append({"result": result,
                        "score": float(scores.mean()) if len(scores) else 0.0,
                        "model_version": version})
    return {"results": results}


#: A mask model's probability at which a pixel is pre-painted.
MASK_THRESHOLD = 0.5


def _brushes(class_names: list[str], probs: np.ndarray) -> list[dict[str, Any]]:
    """The mask model's classes as brush regions, on the canvas Label Studio shows."""
    out = []
    for name, channel in zip(class_names, probs, strict=True):
        mask = channel >= MASK_THRESHOLD
        if mask.any():
            out.append(brush_region(mask, name, score=float(channel[mask].mean())))
    return out


def _p_normal(classifier: Any, images: list) -> list[float]:
    """The gate classifier's P("No finding") per image (nothing without a gate)."""
    if classifier is None or not images:
        return []
    if NO_FINDING not in classifier.class_names:
        raise ProtocolError(503, "the project's classifier has no \"No finding\" output")
    column = classifier.class_names.index(NO_FINDING)
    return [float(p) for p in classifier.predict(images)[:, column]]


def versions(store: ModelStore) -> dict[str, Any]:
    return {"versions": store.versions()}
