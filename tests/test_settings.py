"""Settings: embedded defaults, production refusal, and the zero-service path.

These run Django in subprocesses with a controlled environment, because
settings are read once per process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import write_png

ROOT = Path(__file__).resolve().parent.parent


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CXR_") and k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env.update({"CXR_DATA_DIR": str(tmp_path / "var"), "PYTHONPATH": str(ROOT)}, **extra)
    return env


def _django(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    prog = "import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', " \
           "'cxr_platform.settings'); django.setup()\n" + code
    return subprocess.run([sys.executable, "-c", prog], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_embedded_defaults(tmp_path):
    proc = _django(
        "from django.conf import settings as s\n"
        "print(s.DATABASES['default']['ENGINE'], s.CELERY_TASK_ALWAYS_EAGER, s.MEDIA_ROOT)",
        _env(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    engine, eager, media = proc.stdout.split()
    assert engine.endswith("sqlite3") and eager == "True"
    assert media == str(tmp_path / "var" / "media")


def test_services_named_by_environment(tmp_path):
    proc = _django(
        "from django.conf import settings as s\n"
        "print(s.DATABASES['default']['ENGINE'], s.CELERY_TASK_ALWAYS_EAGER)",
        _env(tmp_path, DATABASE_URL="postgres://u@127.0.0.1:5432/x",
             CELERY_BROKER_URL="redis://127.0.0.1:6379/3"),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["django.db.backends.postgresql", "False"]


@pytest.mark.parametrize("secret", [None, "short", "insecure-dev-" + "x" * 40])
def test_production_refuses_without_real_secret(tmp_path, secret):
    extra = {"CXR_MODE": "production", "CXR_PSEUDONYM_KEY": "p" * 40}
    if secret:
        extra["CXR_SECRET_KEY"] = secret
    proc = _django("print('started')", _env(tmp_path, **extra))
    assert proc.returncode != 0
    assert "CXR_SECRET_KEY must be set" in proc.stderr


def test_production_refuses_to_start_without_the_training_join_secret(tmp_path):
    """Every process loads it: a deployment that forgot it fails at start, not when a
    multi-machine training first needs it."""
    extra = {"CXR_MODE": "production", "CXR_SECRET_KEY": "s" * 50,
             "CXR_PSEUDONYM_KEY": "p" * 40, "CXR_LABEL_STUDIO_WEBHOOK_SECRET": "w" * 40,
             "CXR_LABEL_STUDIO_BRIDGE_SECRET": "b" * 40, "CXR_TRAIN_JOIN_SECRET": "short"}
    proc = _django("print('started')", _env(tmp_path, **extra))
    assert proc.returncode != 0
    assert "CXR_TRAIN_JOIN_SECRET must be set" in proc.stderr


def test_production_starts_with_real_secrets(tmp_path):
    extra = {"CXR_MODE": "production", "CXR_SECRET_KEY": "s" * 50,
             "CXR_PSEUDONYM_KEY": "p" * 40, "CXR_LABEL_STUDIO_WEBHOOK_SECRET": "w" * 40,
             "CXR_LABEL_STUDIO_BRIDGE_SECRET": "b" * 40, "CXR_TRAIN_JOIN_SECRET": "t" * 40}
    proc = _django("from django.conf import settings as s; print(s.DEBUG)", _env(tmp_path, **extra))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_production_redirects_to_https_and_sends_hsts(tmp_path):
    """Production mode: plain HTTP is redirected (except the internal service routes),
    HTTPS responses carry HSTS, cookies are secure, and the proxy's header counts."""
    extra = {"CXR_MODE": "production", "CXR_SECRET_KEY": "s" * 50,
             "CXR_PSEUDONYM_KEY": "p" * 40, "CXR_LABEL_STUDIO_WEBHOOK_SECRET": "w" * 40,
             "CXR_LABEL_STUDIO_BRIDGE_SECRET": "b" * 40, "CXR_TRAIN_JOIN_SECRET": "t" * 40}
    proc = _django(
        "from django.conf import settings as s\n"
        "from django.test import Client\n"
        "print(s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS, s.SESSION_COOKIE_SECURE,\n"
        "      s.CSRF_COOKIE_SECURE, s.SECURE_PROXY_SSL_HEADER[0])\n"
        "c = Client()\n"
        "r = c.get('/login/')\n"
        "print(r.status_code, r.headers.get('Location'))\n"
        "r = c.get('/health/', secure=True)\n"
        "print(r.status_code, r.headers.get('Strict-Transport-Security'))\n"
        "r = c.get('/health/', HTTP_X_FORWARDED_PROTO='https')\n"
        "print(r.status_code, 'Strict-Transport-Security' in r.headers)\n"
        "print(c.get('/health/').status_code)\n",
        _env(tmp_path, **extra))
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0] == "True 31536000 True True HTTP_X_FORWARDED_PROTO"
    assert lines[1] == "301 https://testserver/login/"
    assert lines[2] == "200 max-age=31536000"
    assert lines[3] == "200 True"  # the TLS proxy's header makes the request secure
    assert lines[4] == "200"  # the health check is not redirected (load balancers probe it)


def test_development_does_not_redirect(tmp_path):
    proc = _django("from django.conf import settings as s; print(s.SECURE_SSL_REDIRECT, "
                   "s.SECURE_HSTS_SECONDS)", _env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "0"]


def test_zero_service_path_ingests_on_sqlite(tmp_path):
    """The quick path: SQLite file, eager tasks, local files, no services at all."""
    env = _env(tmp_path)
    files = [write_png(tmp_path / "in" / f"{i}.png", seed=i) for i in range(3)]
    (tmp_path / "in" / "junk.dcm").write_bytes(b"not an image at all")
    manage = [sys.executable, "manage.py"]
    steps = [
        manage + ["migrate", "--noinput", "-v0"],
        manage + ["shell", "-c", "from annotations.services.projects import project_create;"
                  "project_create(name='Quick', slug='quick')"],
        manage + ["ingest", str(files[0].parent), "--project", "quick"],
    ]
    for cmd in steps:
        proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert "3 imported, 0 duplicate, 1 quarantined" in proc.stdout
    assert "not_an_image" in proc.stdout
    assert (tmp_path / "var" / "db.sqlite3").is_file()
    assert len(list((tmp_path / "var" / "media").rglob("display.png"))) == 3
