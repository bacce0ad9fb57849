"""The model version the backend serves, switched without a restart.

``<model_dir>/promoted`` holds the name of the promoted version's folder; the
store checks it on every request (one ``stat``) and loads a newly promoted
version once per worker process.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class NoModel(Exception):
    """No version is promoted yet."""


class ModelStore:
    def __init__(self, model_dir: Path, device: str | None = None) -> None:
        self.model_dir = Path(model_dir)
        self.device = device
        self._lock = threading.Lock()
        self._loaded: tuple[str, Any] | None = None

    def promoted_version(self) -> str | None:
        marker = self.model_dir / "promoted"
        if not marker.is_file():
            return None
        name = marker.read_text().strip()
        return name or None

    def versions(self) -> list[str]:
        if not self.model_dir.is_dir():
            return []
        return sorted(p.name for p in self.model_dir.iterdir()
                      if p.is_dir() and (p / "config.yaml").is_file())

    def detector(self) -> tuple[str, Any]:
        version = self.promoted_version()
        if version is None:
            raise NoModel("no model version is promoted")
        with self._lock:
            if self._loaded is None or self._loaded[0] != version:
                from training.detector import Detector  # heavy import, once per worker

                logger.info("loading model version %s", version)
                self._loaded = (version, Detector.from_dir(self.model_dir / version,
                                                           device=self.device))
            return self._loaded
