"""Helpers for tests that run a real Celery worker beside the test database.

The broker is this machine's Redis on ``CXR_TEST_BROKER_URL`` (scripts/test sets it);
an unreachable broker FAILS the test with the reason, never skips it.
"""

from __future__ import annotations

import contextlib
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


def worker_env(settings, data_dir, **extra: str) -> dict[str, str]:
    """Environment of a worker subprocess that shares this test's database, broker,
    files (media, models) and secrets; single-threaded torch (2 shared cores)."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXR_")}
    env.update(DATABASE_URL=db_url(), CELERY_BROKER_URL=BROKER, CXR_DATA_DIR=str(data_dir),
               CXR_MEDIA_ROOT=str(settings.MEDIA_ROOT), CXR_MODEL_DIR=str(settings.MODEL_DIR),
               CXR_SECRET_KEY=settings.SECRET_KEY, CXR_PSEUDONYM_KEY=settings.PSEUDONYM_KEY,
               CXR_TRAIN_JOIN_SECRET=settings.TRAIN_JOIN_SECRET,
               PYTHONPATH=str(root), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **extra)
    return env


def start_worker(env: dict[str, str], queues: str, log_path, *, faults: str = "",
                 fault_dir=None, name: str = "test"):
    """A real prefork worker (one child) in its own process group, logging to a file
    (a pipe would fill up and block it).  ``faults``: see ``tests.faults``."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    command = ["celery", "-A", "cxr_platform", "worker", "-Q", queues, "-c", "1",
               "--without-gossip", "--without-mingle", "-l", "INFO", "-n", f"{name}@%h"]
    if faults:
        command = ["-m", "tests.faults", faults, str(fault_dir), *command]
    else:
        command = ["-m", "celery", *command[1:]]
    log = open(log_path, "a")  # noqa: SIM115 - the worker owns it until it exits
    return subprocess.Popen([sys.executable, *command], cwd=root, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def kill_worker(worker) -> None:
    """SIGKILL the worker and its children at once (node loss, the OOM killer)."""
    import signal

    try:
        os.killpg(worker.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    worker.wait(timeout=30)


def stop_worker_group(worker) -> None:
    """Warm shutdown (SIGTERM) of the worker's process group; SIGKILL if it hangs."""
    import signal
    import subprocess

    try:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=30)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        kill_worker(worker)


@contextlib.contextmanager
def tasks_to_broker():
    """Within: this process's tasks go to the test broker instead of running eagerly
    (as the platform's web process sends them), so a worker subprocess runs them."""
    from cxr_platform.celery import app

    def fresh_pools() -> None:  # kombu keeps them per URL: the next use picks the right one
        app._pool = None
        app.amqp._producer_pool = None

    saved = app.conf.task_always_eager, app.conf.broker_url
    app.conf.task_always_eager, app.conf.broker_url = False, BROKER
    fresh_pools()
    try:
        yield
    finally:
        fresh_pools()
        app.conf.task_always_eager, app.conf.broker_url = saved
