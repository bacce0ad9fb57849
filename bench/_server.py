"""Helpers for benchmarks that run the platform as real processes on loopback.

A throw-away PostgreSQL database, a free port, subprocesses started in their
own process group (so that stopping one also stops its children, e.g.
gunicorn's or Celery's workers) and an HTTP readiness wait.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import requests


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _admin_conn(server_url: str):
    """Autocommit connection to the server's maintenance database (CREATE/DROP DATABASE)."""
    parts = urlsplit(server_url)
    conn = psycopg2.connect(urlunsplit(parts._replace(path="/postgres")))
    conn.autocommit = True
    return conn


@contextlib.contextmanager
def temporary_database(server_url: str, name: str) -> Iterator[str]:
    """Create database ``name`` on ``server_url`` (dropped first if left over); yield its URL.

    Dropped on exit with ``WITH (FORCE)``, which also ends any session still in it.
    """
    conn = _admin_conn(server_url)
    try:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            cur.execute(f'CREATE DATABASE "{name}"')
        yield urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


class Processes:
    """Subprocesses started by a benchmark; ``stop_all`` ends each one's group."""

    def __init__(self) -> None:
        self._procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: Sequence[str], env: dict[str, str], log: Path,
              cwd: str | None = None) -> subprocess.Popen:
        out = log.open("ab")
        proc = subprocess.Popen(list(argv), env=env, cwd=cwd, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        self._procs.append((name, proc))
        return proc

    def check_alive(self) -> None:
        for name, proc in self._procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited early with status {proc.returncode}")

    def stop_all(self, timeout: float = 10.0) -> None:
        """SIGTERM each process group we started (newest first), then SIGKILL stragglers."""
        for _, proc in reversed(self._procs):
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for _, proc in reversed(self._procs):
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(5)
        self._procs.clear()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    """Signal the process group led by ``proc`` (it was started in a new session)."""
    if proc.poll() is not None and sig == signal.SIGTERM:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def wait_http(url: str, procs: Processes, timeout: float = 60.0) -> None:
    """Poll ``url`` until it answers 200; fail early if one of ``procs`` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs.check_alive()
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")
