"""``python manage.py run_platform`` — the whole platform on its embedded defaults.

Starts (or checks) Label Studio, loads the synthetic demo, puts the demo readers'
images into their Label Studio workspaces, prints how to log in, and serves the
platform until interrupted; Label Studio is stopped on the way out.

With ``CXR_LABEL_STUDIO_URL`` pointing at a running server (and its token in
``CXR_LABEL_STUDIO_TOKEN``) nothing is started: the server's ``/health`` is
checked and an unreachable server is reported plainly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import requests
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from annotations.errors import DomainError
from annotations.label_studio.server import LabelStudioServer
from annotations.services import label_studio_sync as sync
from annotations.services.service_accounts import ML_BACKEND, service_token_rotate


class Command(BaseCommand):
    help = "Run the platform with a Label Studio it starts itself and a demo project."

    def add_arguments(self, parser):
        parser.add_argument("--addrport", default="127.0.0.1:8000")
        parser.add_argument("--no-demo", action="store_true")

    def handle(self, *args, addrport, no_demo, **opts):
        signal.signal(signal.SIGTERM, _raise_exit)
        server = backend = None
        if not os.environ.get("CXR_LABEL_STUDIO_URL"):
            server = self._start_label_studio()
        try:
            backend = self._start_ml_backend()
            self._check_label_studio()
            if not no_demo:
                call_command("load_demo", url=settings.PUBLIC_BASE_URL)
                self._push_demo()
            call_command("runserver", addrport, use_reloader=False)
        finally:
            if backend is not None:
                backend.terminate()
                backend.wait(timeout=30)
                self.stdout.write("ML backend stopped")
            if server is not None:
                server.stop()
                self.stdout.write("Label Studio stopped")

    def _start_label_studio(self) -> LabelStudioServer:
        port = urlparse(settings.LABEL_STUDIO_URL).port or 8080
        server = LabelStudioServer(
            Path(settings.DATA_DIR) / "label-studio", port,
            username="admin@example.org", password=settings.LABEL_STUDIO_TOKEN,
            token=settings.LABEL_STUDIO_TOKEN, bridge_secret=settings.LABEL_STUDIO_BRIDGE_SECRET,
        )
        try:
            server.start()
        except DomainError as exc:
            raise CommandError(f"Label Studio did not start: {exc.message}") from exc
        self.stdout.write(f"Label Studio: {server.url} (started in "
                          f"{server.startup_seconds:.1f} s); admin admin@example.org / "
                          f"{settings.LABEL_STUDIO_TOKEN}")
        return server

    def _start_ml_backend(self) -> subprocess.Popen:
        """The Detectron2 ML backend (gunicorn), serving each Label Studio project its
        platform project's promoted model version (it asks the platform which).

        It gets a fresh ``ml-backend`` service token (which model serves a project and
        training requests only, never an admin's) and the one Label Studio and image
        origin it may talk to.
        """
        addr = urlparse(settings.ML_BACKEND_URL)
        env = {"CXR_ML_LABEL_STUDIO_URL": settings.LABEL_STUDIO_URL,
               "CXR_ML_IMAGE_ORIGINS": settings.PUBLIC_BASE_URL,
               **os.environ, "CXR_ML_MODEL_DIR": str(settings.MODEL_DIR),
               "CXR_ML_BACKEND_USER": settings.ML_BACKEND_USER,
               "CXR_ML_BACKEND_PASSWORD": settings.ML_BACKEND_PASSWORD,
               "CXR_ML_PLATFORM_URL": settings.PUBLIC_BASE_URL,
               "CXR_ML_PLATFORM_TOKEN": service_token_rotate(service=ML_BACKEND)}
        Path(settings.MODEL_DIR).mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "ml_backend.app:application", "--bind",
             f"{addr.hostname}:{addr.port or 9090}", "--workers", "1", "--timeout", "300"],
            cwd=settings.BASE_DIR, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                ok = requests.get(f"{settings.ML_BACKEND_URL}/health", timeout=2, auth=(
                    settings.ML_BACKEND_USER, settings.ML_BACKEND_PASSWORD)).status_code == 200
            except requests.RequestException:
                ok = False
            if ok:
                self.stdout.write(f"ML backend: {settings.ML_BACKEND_URL} (basic auth "
                                  f"{settings.ML_BACKEND_USER} / {settings.ML_BACKEND_PASSWORD};"
                                  f" models in {settings.MODEL_DIR})")
                return proc
            if proc.poll() is not None:
                break
            time.sleep(0.5)
        proc.terminate()
        raise CommandError("the ML backend did not start")

    def _check_label_studio(self) -> None:
        try:
            sync.ls_client().health()
        except DomainError as exc:
            raise CommandError(
                f"Label Studio at {settings.LABEL_STUDIO_URL} is unreachable ({exc.message}). "
                "Start it, or unset CXR_LABEL_STUDIO_URL to let the platform start its own."
            ) from exc

    def _push_demo(self) -> None:
        from annotations.models import Project

        project = Project.objects.filter(slug="demo").first()
        if project is None:
            return
        sync.assignments_push(project)
        self.stdout.write("Label Studio workspaces (each its own organization; readers have "
                          "no Label Studio password: they sign in to the platform, then "
                          "My reading > Open, or these links once signed in):")
        base = settings.PUBLIC_BASE_URL.rstrip("/")
        for ws in project.workspaces.select_related("reader"):
            self.stdout.write(f"  {ws.reader.code}  {base}/api/me/workspaces/{ws.pk}/open/")


def _raise_exit(signum, frame):  # pragma: no cover - signal handler
    raise SystemExit(0)
