"""Label Studio's ML-backend protocol (as Label Studio 1.23.2 calls it), as plain
functions from request bodies to response bodies.

* ``GET /health`` -> ``{"status": "UP", "model_class": ..., "model_version": ...}``
* ``POST /setup`` ``{project, schema, hostname, access_token, extra_params}``
  -> ``{"model_version": ...}``; remembers hostname/token to fetch LS-hosted images.
* ``POST /predict`` ``{tasks: [task...], project, label_config, params}`` ->
  ``{"results": [{"result": [...regions...], "score", "model_version"}, ...]}``,
  one entry per task, in order; a task whose image cannot be read gets an empty
  result (logged), never a failed batch.
* ``POST /webhook`` ``{"action": "START_TRAINING", "project": {...}}`` -> asks the
  platform to retrain; other actions are acknowledged and ignored.
* ``GET /versions`` -> ``{"versions": [...]}``.

Regions are built by ``annotations.label_studio.regions`` (the one mapping both
sides use): percent coordinates with the image's width/height as
``original_width``/``original_height``, a score per region and per task.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from annotations.label_studio.config import parse_label_config
from annotations.label_studio.regions import build_result
from ml_backend.images import ImageError
from ml_backend.model_store import ModelStore, NoModel

logger = logging.getLogger(__name__)


class ProtocolError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class BackendState:
    """What /setup told us, per Label Studio project (hostname and its token)."""

    hostname: str | None = None
    access_token: str | None = None
    projects: dict[str, str] = field(default_factory=dict)  # project -> schema


def _require(body: Any, key: str, kind: type) -> Any:
    if not isinstance(body, Mapping):
        raise ProtocolError(400, "the body must be a JSON object")
    value = body.get(key)
    if not isinstance(value, kind):
        raise ProtocolError(400, f"'{key}' must be a {kind.__name__}")
    return value


def health(store: ModelStore) -> dict[str, Any]:
    return {"status": "UP", "model_class": "CXRDetectron2",
            "model_version": store.promoted_version()}


def setup(body: Any, state: BackendState, store: ModelStore) -> dict[str, Any]:
    project = _require(body, "project", str)
    schema = _require(body, "schema", str)
    try:
        parse_label_config(schema)
    except Exception as exc:  # the label config must be one we can answer
        raise ProtocolError(400, f"unusable label config: {exc}") from exc
    state.projects[project] = schema
    state.hostname = body.get("hostname") or state.hostname
    state.access_token = body.get("access_token") or state.access_token
    return {"model_version": store.promoted_version() or "none"}


ImageFetcher = Callable[[str], np.ndarray]


def predict(body: Any, store: ModelStore, fetch: ImageFetcher,
            score_threshold: float) -> dict[str, Any]:
    tasks = _require(body, "tasks", list)
    for i, task in enumerate(tasks):
        if not isinstance(task, Mapping) or not isinstance(task.get("data"), Mapping):
            raise ProtocolError(400, f"task {i} has no 'data' object")
        if not isinstance(task["data"].get("image"), str):
            raise ProtocolError(400, f"task {i} has no image URL in data.image")
    try:
        version, detector = store.detector()
    except NoModel as exc:
        raise ProtocolError(503, str(exc)) from exc
    images: list[np.ndarray | None] = []
    for task in tasks:
        try:
            images.append(fetch(task["data"]["image"]))
        except ImageError as exc:
            logger.warning("task %s: image unavailable (%s)", task.get("id"), exc)
            images.append(None)
    ready = [im for im in images if im is not None]
    detections = iter(detector.predict(ready) if ready else [])
    results = []
    for image in images:
        if image is None:
            results.append({"result": [], "score": 0.0, "model_version": version})
            continue
        det = next(detections)
        keep = det.scores >= score_threshold
        h, w = image.shape[:2]
        names = [detector.class_names[int(c)] for c in det.classes[keep]]
        scores = det.scores[keep].astype(float)
        result = build_result(det.boxes[keep], names, original_width=w, original_height=h,
                              scores=scores.tolist())
        results.append({"result": result,
                        "score": float(scores.mean()) if len(scores) else 0.0,
                        "model_version": version})
    return {"results": results}


def versions(store: ModelStore) -> dict[str, Any]:
    return {"versions": store.versions()}
