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
from ml_backend.settings import BackendSettings

USER, PASSWORD = "label-studio", "backend-secret-1"


def model_dir_with(version_dir: Path, root: Path, name: str = "v1") -> Path:
    models = root / "models"
    shutil.copytree(version_dir, models / name)
    (models / "promoted").write_text(name)
    return models


#: The Label Studio host in the recorded /setup sample (ml_setup.json).
SAMPLE_LABEL_STUDIO = "http://localhost:18080"


def backend(models: Path, **overrides) -> Backend:
    """A backend on test settings; ``image_origins`` are where tests serve images."""
    defaults = {"platform_url": "http://127.0.0.1:9", "platform_token": "t",
                "label_studio_url": SAMPLE_LABEL_STUDIO}
    settings = BackendSettings(model_dir=models, username=USER, password=PASSWORD,
                               score_threshold=0.3, device="cpu", **{**defaults, **overrides})
    return Backend(settings)


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
