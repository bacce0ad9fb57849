"""A whole stack (docker/compose.yml's services as local processes) for the session.

Unique database names per run, generated secrets, free ports and a ``redis-server`` of the
stack's own (compose's command, its own port: no Redis database of the suite (15) or of a
developer (0, 1) is touched, two sessions never share a broker, and fault tests can
restart it).  If the stack cannot start the fixture FAILS with the service's log tail:
these tests exist to prove the topology runs, so a skip would hide a break.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from annotations.label_studio.server import free_port
from cxr_platform.stack import Stack, StackError
from cxr_platform.stack.__main__ import fresh_secrets

ROOT = Path(__file__).resolve().parents[2]


def stack_env() -> dict[str, str]:
    """Compose's variables for a test stack: fresh secrets, loopback public URLs."""
    return {**fresh_secrets(), "CXR_LABEL_STUDIO_ADMIN_EMAIL": "admin@example.org"}


def free_ports() -> dict[str, int]:
    ports: set[int] = set()
    while len(ports) < 4:
        ports.add(free_port())
    return dict(zip(("platform", "label-studio", "ml-backend", "redis"), sorted(ports),
                    strict=True))


def _install_label_studio() -> None:
    proc = subprocess.run([str(ROOT / "scripts" / "install_label_studio")], cwd=ROOT,
                          capture_output=True, text=True, timeout=1800, check=False)
    if proc.returncode != 0:
        pytest.fail(f"scripts/install_label_studio failed:\n{(proc.stdout + proc.stderr)[-3000:]}",
                    pytrace=False)


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> Iterator[Stack]:
    _install_label_studio()
    run = secrets.token_hex(4)
    instance = Stack(tmp_path_factory.mktemp("stack"), env=stack_env(), ports=free_ports(),
                     redis="own", databases={"platform": f"stack_{run}",
                                             "label-studio": f"stack_{run}_ls"},
                     # the fault suite kills the gpu worker mid-training: heartbeat each second
                     extra_env={"worker-gpu": {"CXR_RUN_HEARTBEAT_SECONDS": "1"}})
    try:
        instance.up()
    except (StackError, OSError, subprocess.SubprocessError) as exc:
        instance.drop_databases()
        pytest.fail(f"the stack did not start: {exc}", pytrace=False)
    try:
        yield instance
    finally:
        instance.down()
        instance.drop_databases()
