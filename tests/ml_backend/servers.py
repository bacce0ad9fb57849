"""Small real HTTP servers for ML-backend tests: the backend itself and a file server."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from ml_backend.app import Backend
from ml_backend.model_store import ProjectModel
from ml_backend.settings import BackendSettings

USER, PASSWORD = "label-studio", "backend-secret-1"
#: ``backend(..., serves=PLATFORM)``: ask the platform which model serves a project.
PLATFORM = object()


def model_dir_with(version_dir: Path, root: Path, name: str = "v1") -> Path:
    """A models folder holding the version as ``name`` (nothing says it is promoted:
    the registry does, see ``register_promoted``)."""
    models = root / "models"
    shutil.copytree(version_dir, models / name)
    return models


def register_promoted(project, name: str, sha256: str):
    """Register the version ``name`` (its files already in MODEL_DIR) for ``project``
    and promote it: the registry is the only truth about what serves a project."""
    from annotations.models import ModelVersion
    from annotations.services.model_registry import version_promote

    version = ModelVersion.objects.create(project=project, name=name, sha256=sha256,
                                          config="")
    version_promote(version=version, reason="test")
    return version


#: The Label Studio host in the recorded /setup sample (ml_setup.json).
SAMPLE_LABEL_STUDIO = "http://localhost:18080"


def backend(models: Path, *, serves="v1", **overrides) -> Backend:
    """A backend on test settings; ``image_origins`` are where tests serve images.

    ``serves``: the version every Label Studio project gets (a name), None for
    none promoted, a resolver (``ls_project_id -> ProjectModel | None``), or
    ``PLATFORM`` to ask the platform at ``platform_url`` as in production.
    """
    if serves is PLATFORM:
        resolve = None
    elif serves is None or isinstance(serves, str):
        answer = ProjectModel("test", serves, None) if serves else None

        def resolve(ls_project_id: int):
            return answer
    else:
        resolve = serves
    defaults = {"platform_url": "http://127.0.0.1:9", "platform_token": "t",
                "label_studio_url": SAMPLE_LABEL_STUDIO}
    settings = BackendSettings(model_dir=models, username=USER, password=PASSWORD,
                               score_threshold=0.3, device="cpu", **{**defaults, **overrides})
    return Backend(settings, resolve)


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args) -> None:  # keep test output clean
        pass


class _ThreadingWSGIServer(ThreadingHTTPServer, WSGIServer):
    pass


@contextmanager
def serve_wsgi(app) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, server_class=_ThreadingWSGIServer,
                         handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def end_headers(self) -> None:
        self.send_header("Access-Control-Allow-Origin", "*")
        super().end_headers()


@contextmanager
def serve_files(root: Path) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietFiles, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
