"""Helpers for tests that run a real Celery worker beside the test database.

The broker is this machine's Redis on ``CXR_TEST_BROKER_URL`` (scripts/test sets it);
an unreachable broker FAILS the test with the reason, never skips it.
"""

from __future__ import annotations

import os

import pytest
import redis
from django.db import connection

BROKER = os.environ.get("CXR_TEST_BROKER_URL", "redis://127.0.0.1:6379/15")


def db_url() -> str:
    """The URL of the database the tests (and a live server) use, for a worker process."""
    if connection.vendor != "postgresql":
        pytest.fail("the worker test runs against PostgreSQL (set DATABASE_URL)")
    s = connection.settings_dict
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def empty_broker() -> redis.Redis:
    """The test broker, reachable and emptied."""
    client = redis.Redis.from_url(BROKER)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.fail(f"Redis broker {BROKER} is not reachable: the worker test needs it ({exc})")
    client.flushdb()
    return client


def stop_worker(worker) -> str:
    """SIGTERM a worker subprocess (warm shutdown), kill it if it hangs; its output."""
    import signal
    import subprocess

    worker.send_signal(signal.SIGTERM)
    try:
        out, _ = worker.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()
        out, _ = worker.communicate()
    return out
