"""ML backend settings, from ``CXR_ML_*`` environment variables (no Django here).

Every bound on what a caller can make the backend do (bytes, tasks, pixels,
seconds, servers contacted) is one setting here with a default that fits a
chest-X-ray deployment; ``docs/ml_backend.md`` lists them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ml_backend.images import FetchLimits
from ml_backend.origins import OriginPolicy


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def _int(name: str, default: int) -> int:
    return int(_env(name, str(default)))


def _float(name: str, default: float) -> float:
    return float(_env(name, str(default)))


def _list(name: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in _env(name).split(",") if item.strip())


@dataclass(frozen=True)
class BackendSettings:
    #: Folder of model versions (the platform's MODEL_DIR, mounted read-only); which
    #: one serves a Label Studio project is asked of the platform, per project.
    model_dir: Path = field(default_factory=lambda: Path(_env("CXR_ML_MODEL_DIR", "var/models")))
    #: Fetch a version this host lacks from the platform (``GET /api/ml/model-versions/
    #: <name>/files/<file>``, the service token) into ``model_dir``, then verify it: for
    #: a backend that shares no folder with the platform (S3 stores, another host).
    fetch_models: bool = field(default_factory=lambda: _env(
        "CXR_ML_FETCH_MODELS").strip().lower() in ("1", "true", "yes", "on"))
    #: HTTP basic-auth credentials Label Studio is configured to send.
    username: str = field(default_factory=lambda: _env("CXR_ML_BACKEND_USER"))
    password: str = field(default_factory=lambda: _env("CXR_ML_BACKEND_PASSWORD"))
    #: The platform's API, for START_TRAINING requests.
    platform_url: str = field(default_factory=lambda: _env("CXR_ML_PLATFORM_URL",
                                                           "http://127.0.0.1:8000"))
    #: The ``ml-backend`` service token (``manage.py ml_backend_token``), never an admin's.
    platform_token: str = field(default_factory=lambda: _env("CXR_ML_PLATFORM_TOKEN"))
    #: The one Label Studio this backend serves: ``/setup`` naming another host is
    #: refused, its token is sent to this origin only, relative image paths resolve here.
    label_studio_url: str = field(default_factory=lambda: _env("CXR_ML_LABEL_STUDIO_URL",
                                                               "http://127.0.0.1:8080"))
    #: Origins images may come from besides Label Studio's (comma-separated); empty:
    #: the platform's (``CXR_ML_PLATFORM_URL``), where its signed image URLs point.
    image_origins: tuple[str, ...] = field(default_factory=lambda: _list("CXR_ML_IMAGE_ORIGINS"))
    #: Detections below this score are not returned as pre-labels.
    score_threshold: float = field(
        default_factory=lambda: _float("CXR_ML_SCORE_THRESHOLD", 0.3))
    #: Seconds to connect, to wait for each read, and for one whole image.
    image_connect_timeout: float = field(
        default_factory=lambda: _float("CXR_ML_IMAGE_CONNECT_TIMEOUT", 5))
    image_timeout: float = field(default_factory=lambda: _float("CXR_ML_IMAGE_TIMEOUT", 10))
    image_deadline: float = field(default_factory=lambda: _float("CXR_ML_IMAGE_DEADLINE", 30))
    #: Largest image file (bytes) and image (width x height) fetched and decoded.
    max_image_bytes: int = field(default_factory=lambda: _int("CXR_ML_MAX_IMAGE_BYTES", 64 << 20))
    max_image_pixels: int = field(
        default_factory=lambda: _int("CXR_ML_MAX_IMAGE_PIXELS", 40_000_000))
    #: Redirects followed per image (each must stay on an allowed origin).
    image_max_redirects: int = field(
        default_factory=lambda: _int("CXR_ML_IMAGE_MAX_REDIRECTS", 3))
    #: Largest request body (bytes) and most tasks in one ``/predict``.
    max_body_bytes: int = field(default_factory=lambda: _int("CXR_ML_MAX_BODY_BYTES", 10 << 20))
    max_tasks: int = field(default_factory=lambda: _int("CXR_ML_MAX_TASKS", 100))
    #: Model versions kept loaded per worker process (least recently used evicted).
    max_loaded_models: int = field(default_factory=lambda: _int("CXR_ML_MAX_LOADED_MODELS", 2))
    #: Seconds a project's answer (its promoted version) is reused before asking again.
    project_cache_seconds: float = field(
        default_factory=lambda: _float("CXR_ML_PROJECT_CACHE_SECONDS", 10))
    device: str | None = field(default_factory=lambda: _env("CXR_ML_DEVICE") or None)

    def origin_policy(self) -> OriginPolicy:
        images = self.image_origins or (self.platform_url,)
        return OriginPolicy.from_urls(self.label_studio_url or None, images)

    def fetch_limits(self) -> FetchLimits:
        return FetchLimits(connect_timeout=self.image_connect_timeout,
                           read_timeout=self.image_timeout, deadline=self.image_deadline,
                           max_bytes=self.max_image_bytes, max_pixels=self.max_image_pixels,
                           max_redirects=self.image_max_redirects)
