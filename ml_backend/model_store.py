"""Which model serves a request, and the loaded models, per Label Studio project.

There is no global "promoted" file: the platform's registry is the only truth.
Each request names its Label Studio project (``/setup`` and ``/predict`` carry
``project`` as ``"<id>.<timestamp>"``); a resolver maps that id to the platform
project behind it and its promoted version with the version's manifest digest
(``GET /api/ml/projects/<id>/model/`` with the backend's service token, see
``ml_backend.platform_client``), remembered for a few seconds
(``CXR_ML_PROJECT_CACHE_SECONDS``) so a burst of predictions costs one call.

Several versions stay loaded at once (projects A and B each keep theirs), at
most ``CXR_ML_MAX_LOADED_MODELS`` per worker process, the least recently used
evicted first.  A version is loaded verified whole against the registry's
digest (``training.artifacts.read_version``) before anything is parsed.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: A version name is one path component in the models folder, never more.
VERSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
DIGEST = re.compile(r"[0-9a-f]{64}")


class NoModel(Exception):
    """Nothing is promoted for the project, or its files are missing or do not verify."""


@dataclass(frozen=True)
class ProjectModel:
    """The platform's answer for one Label Studio project."""

    project: str  # the platform project's slug
    version: str | None  # the promoted detector's folder name (None: masks only)
    sha256: str | None  # the registry's manifest digest
    #: the project's two-stage gate: its promoted classifier gates the boxes
    #: (``training.two_stage``), at ``threshold``, rescaling scores when ``rescale``
    classifier: str | None = None
    classifier_sha256: str | None = None
    threshold: float = 0.9
    rescale: bool = False
    #: the project's promoted mask model (pre-painted brush regions), if any
    segmenter: str | None = None
    segmenter_sha256: str | None = None

    def __post_init__(self) -> None:
        if self.version is None and self.segmenter is None:
            raise ValueError("the answer names neither a detector nor a mask model")
        for name in (self.version, self.classifier, self.segmenter):
            if name is not None and not VERSION_NAME.fullmatch(name):
                raise ValueError(f"not a model version name: {name[:80]!r}")
        for digest in (self.sha256, self.classifier_sha256, self.segmenter_sha256):
            if digest is not None and not DIGEST.fullmatch(digest):
                raise ValueError("not a manifest digest")
        if not 0.0 <= float(self.threshold) <= 1.0:
            raise ValueError("the gate's operating point is a probability")


#: ``ls_project_id -> ProjectModel`` (None: nothing promoted there); may raise.
Resolver = Callable[[int], "ProjectModel | None"]
#: ``fetch(version name, empty folder)``: download that version's files into the folder.
Fetcher = Callable[[str, Path], None]


class CachedResolver:
    """Remembers each project's answer (none included) for ``ttl`` seconds."""

    def __init__(self, resolve: Resolver, ttl: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._resolve, self.ttl, self._clock = resolve, ttl, clock
        self._lock = threading.Lock()
        self._cache: dict[int, tuple[float, ProjectModel | None]] = {}

    def __call__(self, ls_project_id: int) -> ProjectModel | None:
        now = self._clock()
        with self._lock:
            hit = self._cache.get(ls_project_id)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        answer = self._resolve(ls_project_id)  # errors are not cached: the next call retries
        with self._lock:
            self._cache[ls_project_id] = (now, answer)
        return answer


class ModelStore:
    def __init__(self, model_dir: Path, device: str | None = None, *, resolve: Resolver,
                 max_loaded: int = 2, fetch: Fetcher | None = None) -> None:
        self.model_dir = Path(model_dir)
        #: ``fetch(name, folder)`` downloads a version this host lacks (None: the
        #: folder is shared with the platform, a missing version is an error)
        self.fetch = fetch
        self.device = device
        self.resolve = resolve
        self.max_loaded = max(1, max_loaded)
        self._lock = threading.Lock()
        #: (version, digest) -> Detector, least recently used first.
        self._loaded: OrderedDict[tuple[str, str | None], Any] = OrderedDict()

    def model_for(self, ls_project_id: int) -> ProjectModel:
        model = self.resolve(ls_project_id)
        if model is None:
            raise NoModel(f"no model version is promoted for Label Studio project "
                          f"{ls_project_id}")
        return model

    def loaded(self) -> list[str]:
        """Loaded versions, most recently used first."""
        with self._lock:
            return [version for version, _ in reversed(self._loaded)]

    def versions(self) -> list[str]:
        if not self.model_dir.is_dir():
            return []
        return sorted(p.name for p in self.model_dir.iterdir()
                      if p.is_dir() and (p / "config.yaml").is_file())

    def detector(self, ls_project_id: int) -> tuple[str, Any]:
        """The version serving this Label Studio project and its loaded Detector."""
        return self.detector_of(self.model_for(ls_project_id))

    def detector_of(self, model: ProjectModel) -> tuple[str | None, Any]:
        """The loaded Detector of one answer of the platform (loaded once, LRU-kept);
        ``(None, None)`` for a project a mask model serves alone."""
        if model.version is None:
            return None, None
        key = (model.version, model.sha256)
        with self._lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return model.version, self._loaded[key]
            detector = self._load(model)
            self._loaded[key] = detector
            while len(self._loaded) > self.max_loaded:
                (old, _), _ = self._loaded.popitem(last=False)
                logger.info("evicted model version %s (CXR_ML_MAX_LOADED_MODELS=%s)",
                            old, self.max_loaded)
            return model.version, detector

    def classifier(self, model: ProjectModel) -> Any | None:
        """The gate's classifier of a project whose two-stage switch is on (else None),
        verified against the registry's digest, kept loaded like detectors."""
        from training.classifier import Classifier

        return self._companion(model, model.classifier, model.classifier_sha256,
                               Classifier, "classifier")

    def segmenter(self, model: ProjectModel) -> Any | None:
        """The project's promoted mask model (else None), verified and kept likewise."""
        from training.segmenter import Segmenter

        return self._companion(model, model.segmenter, model.segmenter_sha256,
                               Segmenter, "mask model")

    def _companion(self, model: ProjectModel, name: str | None, digest: str | None,
                   kind: Any, what: str) -> Any | None:
        """A model that serves beside the detector (gate classifier, mask model): loaded
        once per (version, digest); room is kept for one of each beyond the detectors."""
        if name is None:
            return None
        key = (name, digest)
        with self._lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
            from annotations.errors import DomainError

            try:
                loaded = kind.from_dir(self._folder(name), expected_sha256=digest)
            except (DomainError, OSError) as exc:
                raise NoModel(f"{what} {name} of project {model.project} is unavailable "
                              f"here: {getattr(exc, 'message', exc)}") from exc
            self._loaded[key] = loaded
            while len(self._loaded) > self.max_loaded + 2:
                self._loaded.popitem(last=False)
            return loaded

    def _load(self, model: ProjectModel) -> Any:
        from annotations.errors import DomainError
        from training.detector import Detector  # heavy import, once per worker

        logger.info("loading model version %s of project %s", model.version, model.project)
        try:
            return Detector.from_dir(self._folder(model.version), device=self.device,
                                     expected_sha256=model.sha256)
        except (DomainError, OSError) as exc:  # missing, unreadable or not verified
            logger.warning("model version %s refused: %s", model.version, exc)
            raise NoModel(f"model version {model.version} of project {model.project} is "
                          f"unavailable here: {getattr(exc, 'message', exc)}") from exc

    def _folder(self, name: str) -> Path:
        """The local folder of version ``name``; fetched from the platform first when
        this host lacks it and fetching is on (the loader then verifies its digest)."""
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise NoModel(f"{name!r} is not a model version name")
        folder = self.model_dir / name
        if self.fetch is None or (folder / "config.yaml").is_file():
            return folder
        self.model_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.model_dir, prefix=".fetch-"))
        try:
            try:
                self.fetch(name, tmp)
            except Exception as exc:  # the platform's answer, whatever failed: no model
                raise NoModel(f"model version {name} could not be fetched: "
                              f"{getattr(exc, 'message', None) or exc}") from exc
            try:
                os.replace(tmp, folder)
            except OSError:  # another worker fetched it meanwhile
                if not (folder / "config.yaml").is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        logger.info("fetched model version %s from the platform", name)
        return folder
