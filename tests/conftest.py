"""Shared fixtures.

Django tests run against the database named by DATABASE_URL (scripts/test points
it at this machine's PostgreSQL).  Every test gets its own media, staging and
quarantine folders so files never leak between tests.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

# Session fixtures shared across test packages: a real Label Studio server and a
# tiny Detectron2 model trained to overfit (both expensive, so built once).
pytest_plugins = ["tests.fixtures.label_studio_server", "tests.fixtures.trained_model",
                  "tests.s3"]


@pytest.fixture(autouse=True)
def _isolated_files(request, tmp_path_factory):
    """Per-test file roots, a fast password hasher (PBKDF2 costs ~0.3 s a user), and
    an empty cache (sign-in throttling counts failures there)."""
    try:
        settings = request.getfixturevalue("settings")
    except pytest.FixtureLookupError:  # running without pytest-django (pure tests)
        yield
        return
    from django.core.cache import cache

    cache.clear()
    root = tmp_path_factory.mktemp("data")
    settings.MEDIA_ROOT = root / "media"
    settings.STAGING_ROOT = root / "staging"
    settings.QUARANTINE_ROOT = root / "quarantine"
    settings.STORAGE_CACHE_ROOT = root / "cache"
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    yield


@pytest.fixture
def admin_user(django_user_model):
    return django_user_model.objects.create_user(
        username="admin@example.org", password="admin-pass-123", is_staff=True)


@pytest.fixture
def project(db, admin_user):
    from annotations.services.projects import project_create

    return project_create(name="Test project", slug="test", actor=admin_user)


def write_png(path: Path, seed: int, size: tuple[int, int] = (300, 240)) -> Path:
    """A small grayscale PNG with distinct content per seed."""
    rng = np.random.default_rng(seed)
    img = (rng.random(size) * 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)
    return path


@pytest.fixture
def png_images(tmp_path):
    return [write_png(tmp_path / "in" / f"img{i}.png", seed=i) for i in range(4)]


def one_reader_films(project, tmp_path, n: int, seed: int, code: str):
    """``n`` ingested films of ``project``, each assigned to one new reader ``code``:
    ``(reader, images)`` in id order."""
    from annotations.services import readers

    project.readers_per_image = 1
    project.save()
    ingest_paths(project, [write_png(tmp_path / "in" / f"{code}-{i}.png", seed=seed + i)
                           for i in range(n)])
    reader = readers.reader_create(email=f"{code.lower()}@example.org", code=code)
    images = list(project.images.order_by("id"))
    readers.assignments_create(project=project, images=images)
    return reader, images


def ingest_paths(project, paths):
    """Stage files as one batch and run each file's ingest task (eager); the batch."""
    from annotations.services import ingest
    from annotations.tasks import ingest_file

    batch = ingest.ingest_batch_create(project=project, inputs=paths)
    for item_id in batch.items.order_by("seq").values_list("id", flat=True):
        ingest_file.delay(item_id=item_id)
    return batch


def pytest_terminal_summary(terminalreporter):
    """The fault-injection table of ``tests/stack/test_stack_faults.py``, when it ran."""
    from tests.stack.harness import FAULT_TABLE, fault_table

    if FAULT_TABLE:
        terminalreporter.section("faults against the stack")
        terminalreporter.write_line(fault_table())
