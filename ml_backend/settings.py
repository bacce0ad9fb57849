"""ML backend settings, from ``CXR_ML_*`` environment variables (no Django here)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


@dataclass(frozen=True)
class BackendSettings:
    #: Folder of model versions; the file ``promoted`` names the version served.
    model_dir: Path = field(default_factory=lambda: Path(_env("CXR_ML_MODEL_DIR", "var/models")))
    #: HTTP basic-auth credentials Label Studio is configured to send.
    username: str = field(default_factory=lambda: _env("CXR_ML_BACKEND_USER"))
    password: str = field(default_factory=lambda: _env("CXR_ML_BACKEND_PASSWORD"))
    #: The platform's API, for START_TRAINING requests.
    platform_url: str = field(default_factory=lambda: _env("CXR_ML_PLATFORM_URL",
                                                           "http://127.0.0.1:8000"))
    platform_token: str = field(default_factory=lambda: _env("CXR_ML_PLATFORM_TOKEN"))
    #: Detections below this score are not returned as pre-labels.
    score_threshold: float = field(
        default_factory=lambda: float(_env("CXR_ML_SCORE_THRESHOLD", "0.3")))
    image_timeout: float = field(default_factory=lambda: float(_env("CXR_ML_IMAGE_TIMEOUT", "10")))
    device: str | None = field(default_factory=lambda: _env("CXR_ML_DEVICE") or None)
