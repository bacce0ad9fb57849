"""A real Celery worker against the real Redis broker ingests a folder.

The ingest command runs in a subprocess with ``CELERY_BROKER_URL`` set, so it
stages the files, enqueues one task per file on the ``ingest`` queue and waits;
a worker process (prefork, 2 children) consumes them and writes to the same
PostgreSQL test database.  Needs Redis on CXR_TEST_BROKER_URL (scripts/test
sets it to this machine's Redis); an unreachable broker fails the test loudly.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from annotations.models import Image, IngestItem
from tests.conftest import write_png
from tests.worker import BROKER, db_url, empty_broker, stop_worker

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def broker():
    client = empty_broker()
    yield BROKER
    client.flushdb()


@pytest.mark.django_db(transaction=True)
def test_real_worker_ingests_folder(broker, project, settings, tmp_path):
    data = tmp_path / "var"
    settings.MEDIA_ROOT = data / "media"
    settings.STAGING_ROOT = data / "staging"
    settings.QUARANTINE_ROOT = data / "quarantine"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXR_")}
    env.update(DATABASE_URL=db_url(), CELERY_BROKER_URL=broker, CXR_DATA_DIR=str(data),
               CXR_SECRET_KEY=settings.SECRET_KEY, CXR_PSEUDONYM_KEY=settings.PSEUDONYM_KEY,
               PYTHONPATH=str(ROOT))
    folder = tmp_path / "in"
    for i in range(6):
        write_png(folder / "sub" / f"{i}.png", seed=100 + i)
    (folder / "broken.dcm").write_bytes(b"\x00" * 10)

    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "cxr_platform", "worker", "-Q", "ingest,default",
         "-c", "2", "--without-gossip", "--without-mingle", "-l", "INFO", "-n", "test@%h"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        proc = subprocess.run(
            [sys.executable, "manage.py", "ingest", str(folder), "--project", project.slug,
             "--timeout", "240"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
        )
    finally:
        log = stop_worker(worker)
    assert proc.returncode == 0, proc.stderr[-3000:] + log[-3000:]
    assert "6 imported, 0 duplicate, 1 quarantined" in proc.stdout, proc.stdout
    assert Image.objects.filter(project=project).count() == 6
    assert IngestItem.objects.filter(status="pending").count() == 0
    # the tasks really went through the worker, not an in-process eager call
    assert log.count("annotations.tasks.ingest_file") >= 7, log[-2000:]
    for image in Image.objects.all():
        assert (settings.MEDIA_ROOT / image.display_path).is_file()
