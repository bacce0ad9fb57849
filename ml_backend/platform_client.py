"""The ML backend's client of the platform API: which model serves a Label Studio
project, and START_TRAINING.

It authenticates as the platform's ``ml-backend`` service (``Authorization:
Service <token>``, from ``manage.py ml_backend_token``): a credential the
platform accepts on its three endpoints alone (``GET
/api/ml/projects/<id>/model/``, ``GET /api/ml/model-versions/<name>/files/<file>``
and ``POST /api/ml/training-requests/``), so a compromised backend cannot read or
change anything else.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from ml_backend.model_store import ProjectModel
from ml_backend.protocol import ProtocolError

logger = logging.getLogger(__name__)
#: A version's files, as the platform serves them (``training.artifacts``).
VERSION_FILES = ("config.yaml", "model.pth", "manifest.sha256")


class PlatformClient:
    def __init__(self, base_url: str, token: str, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"PlatformClient({self.base_url!r})"

    def _headers(self) -> dict[str, str]:
        if not self._token:
            raise ProtocolError(503, "no platform service token configured "
                                "(CXR_ML_PLATFORM_TOKEN)")
        return {"Authorization": f"Service {self._token}"}

    def project_model(self, ls_project_id: int) -> ProjectModel | None:
        """The promoted version (and its digest) of the platform project behind a
        Label Studio project; None when the platform has none (404)."""
        try:
            response = requests.get(f"{self.base_url}/api/ml/projects/{int(ls_project_id)}/model/",
                                    headers=self._headers(), timeout=self.timeout,
                                    allow_redirects=False)
        except requests.RequestException as exc:
            raise ProtocolError(502, f"platform unreachable ({type(exc).__name__})") from exc
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            logger.warning("model of LS project %s: the platform answered %s", ls_project_id,
                           response.status_code)
            raise ProtocolError(502, f"the platform answered {response.status_code} when asked "
                                "which model serves this project")
        try:
            body = response.json()
            gate = body.get("two_stage") or {}
            masks = body.get("masks") or {}
            version = body.get("model_version")
            return ProjectModel(project=str(body["project"]),
                                version=str(version) if version is not None else None,
                                sha256=body.get("sha256") or None,
                                classifier=gate.get("classifier") or None,
                                classifier_sha256=gate.get("sha256") or None,
                                threshold=float(gate.get("threshold", 0.9)),
                                rescale=bool(gate.get("rescale", False)),
                                segmenter=masks.get("segmenter") or None,
                                segmenter_sha256=masks.get("sha256") or None)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ProtocolError(502, "the platform's answer names no usable model") from exc

    def fetch_version(self, name: str, dest: Path) -> None:
        """Download a registered version's files into ``dest`` (the store verifies them
        against the registry's digest before loading), each bounded by its size limit
        while it streams in."""
        from training.artifacts import MAX_FILE_BYTES

        for filename in VERSION_FILES:
            url = f"{self.base_url}/api/ml/model-versions/{quote(name, safe='')}/files/{filename}"
            try:
                with requests.get(url, headers=self._headers(), timeout=self.timeout,
                                  allow_redirects=False, stream=True) as response:
                    if response.status_code != 200:
                        raise ProtocolError(503, f"the platform answered "
                                            f"{response.status_code} for {filename} of "
                                            f"model {name}")
                    written = 0
                    with open(dest / filename, "wb") as fh:
                        for chunk in response.iter_content(1 << 20):
                            written += len(chunk)
                            if written > MAX_FILE_BYTES[filename]:
                                raise ProtocolError(503, f"{filename} of model {name} is "
                                                    "larger than a model file may be")
                            fh.write(chunk)
            except requests.RequestException as exc:
                raise ProtocolError(502, f"platform unreachable ({type(exc).__name__})") \
                    from exc

    def request_training(self, ls_project_id: int) -> dict[str, Any]:
        """Ask the platform to retrain the project behind a Label Studio project.

        The platform decides (only projects whose admin allowed Label Studio to
        trigger training); a refusal is passed back to Label Studio and logged.
        """
        headers = self._headers()
        try:
            response = requests.post(
                f"{self.base_url}/api/ml/training-requests/",
                json={"ls_project_id": ls_project_id}, headers=headers, timeout=self.timeout,
                allow_redirects=False)  # the token goes to the configured platform only
        except requests.RequestException as exc:
            raise ProtocolError(502, f"platform unreachable ({type(exc).__name__})") from exc
        if not 200 <= response.status_code < 300:  # a redirect is not followed: an error
            logger.warning("START_TRAINING for LS project %s refused by the platform (%s)",
                           ls_project_id, response.status_code)
            try:
                reason = response.json().get("error", {}).get("message", "refused")
            except ValueError:
                reason = "refused"
            raise ProtocolError(403 if response.status_code in (401, 403) else 502, reason)
        return response.json()
