"""WSGI application of the ML backend (``gunicorn ml_backend.app:application``).

Every endpoint requires HTTP basic auth with ``CXR_ML_BACKEND_USER`` /
``CXR_ML_BACKEND_PASSWORD`` (configured in Label Studio when the backend is
connected); unauthenticated calls get 401.  A request body is bounded before it
is read (``Content-Length`` at most ``CXR_ML_MAX_BODY_BYTES``, else 413, and
never more than that is read).  The model is loaded once per worker, on first
use; which version serves a request is its Label Studio project's, asked of the
platform (``ml_backend.model_store``), several loaded at once.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

from ml_backend import protocol
from ml_backend.images import ImageFetcher
from ml_backend.model_store import CachedResolver, ModelStore, Resolver
from ml_backend.platform_client import PlatformClient
from ml_backend.settings import BackendSettings

logger = logging.getLogger(__name__)
StartResponse = Callable[..., Any]


class Backend:
    def __init__(self, settings: BackendSettings | None = None,
                 resolve: Resolver | None = None) -> None:
        """``resolve``: Label Studio project id -> its model; default: ask the platform."""
        self.settings = settings or BackendSettings()
        if not self.settings.username or not self.settings.password:
            raise RuntimeError("set CXR_ML_BACKEND_USER and CXR_ML_BACKEND_PASSWORD: the ML "
                               "backend refuses to run without authentication")
        self.platform = PlatformClient(self.settings.platform_url, self.settings.platform_token)
        resolve = resolve or CachedResolver(self.platform.project_model,
                                            self.settings.project_cache_seconds)
        self.store = ModelStore(self.settings.model_dir, self.settings.device, resolve=resolve,
                                max_loaded=self.settings.max_loaded_models,
                                fetch=self.platform.fetch_version
                                if self.settings.fetch_models else None)
        self.state = protocol.BackendState()
        self.policy = self.settings.origin_policy()
        self.limits = self.settings.fetch_limits()

    # -- WSGI ------------------------------------------------------------------------

    def __call__(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "/").rstrip("/")
        try:
            if not self._authorized(environ.get("HTTP_AUTHORIZATION", "")):
                return _json(start_response, 401, {"error": "authentication required"},
                             [("WWW-Authenticate", 'Basic realm="cxr-ml-backend"')])
            handler = self._route(method, path or "/")
            body = _read_json(environ, self.settings.max_body_bytes) \
                if method == "POST" else None
            return _json(start_response, 200, handler(body))
        except protocol.ProtocolError as exc:
            return _json(start_response, exc.status, {"error": exc.reason})
        except Exception:  # never leak a traceback to the caller
            logger.exception("ML backend error on %s %s", method, path)
            return _json(start_response, 500, {"error": "internal error"})

    def _authorized(self, header: str) -> bool:
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return hmac.compare_digest(user, self.settings.username) and \
            hmac.compare_digest(password, self.settings.password)

    def _route(self, method: str, path: str) -> Callable[[Any], dict[str, Any]]:
        routes = {
            ("GET", "/health"): lambda _: protocol.health(self.store),
            ("GET", "/"): lambda _: protocol.health(self.store),
            ("POST", "/setup"): lambda b: protocol.setup(b, self.state, self.store, self.policy),
            ("POST", "/predict"): self._predict,
            ("POST", "/webhook"): self._webhook,
            ("GET", "/versions"): lambda _: protocol.versions(self.store),
        }
        handler = routes.get((method, path))
        if handler is None:
            raise protocol.ProtocolError(404, f"no endpoint {method} {path}")
        return handler

    def _predict(self, body: Any) -> dict[str, Any]:
        fetcher = ImageFetcher(self.policy, self.limits, token=self.state.access_token)
        return protocol.predict(body, self.store, fetcher, self.settings.score_threshold,
                                self.settings.max_tasks)

    def _webhook(self, body: Any) -> dict[str, Any]:
        action = protocol._require(body, "action", str)
        if action != "START_TRAINING":
            return {"status": "ignored", "action": action}
        project = body.get("project") or {}
        ls_project = project.get("id")
        if not isinstance(ls_project, int):
            raise protocol.ProtocolError(400, "START_TRAINING without project.id")
        return self.platform.request_training(ls_project)


def _read_json(environ: dict, max_bytes: int) -> Any:
    """The JSON body, its size checked against ``max_bytes`` before a byte is read."""
    declared = environ.get("CONTENT_LENGTH") or ""
    if not declared:
        if environ.get("HTTP_TRANSFER_ENCODING"):
            raise protocol.ProtocolError(411, "a request body needs a Content-Length")
        return None
    try:
        length = int(declared)
    except ValueError as exc:
        raise protocol.ProtocolError(400, "bad Content-Length") from exc
    if length < 0:
        raise protocol.ProtocolError(400, "bad Content-Length")
    if length > max_bytes:
        raise protocol.ProtocolError(413, f"request body of {length} bytes is larger than "
                                     f"the limit of {max_bytes} (CXR_ML_MAX_BODY_BYTES)")
    raw = environ["wsgi.input"].read(length) if length else b""
    try:
        return json.loads(raw or b"null")
    except ValueError as exc:
        raise protocol.ProtocolError(400, "the body is not JSON") from exc


def _json(start_response: StartResponse, status: int, body: dict,
          headers: list[tuple[str, str]] | None = None) -> list[bytes]:
    data = json.dumps(body).encode()
    reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
              404: "Not Found", 411: "Length Required", 413: "Content Too Large",
              422: "Unprocessable Content", 500: "Internal Server Error", 502: "Bad Gateway",
              503: "Service Unavailable"}.get(status, "Error")
    start_response(f"{status} {reason}", [("Content-Type", "application/json"),
                                          ("Content-Length", str(len(data))),
                                          *(headers or [])])
    return [data]


def create_app(settings: BackendSettings | None = None,
               resolve: Resolver | None = None) -> Backend:
    return Backend(settings, resolve)


def application(environ: dict, start_response: StartResponse) -> Iterable[bytes]:
    """gunicorn entry point: one Backend per worker process, built on first request."""
    global _APP
    if _APP is None:
        _APP = create_app()
    return _APP(environ, start_response)


_APP: Backend | None = None
