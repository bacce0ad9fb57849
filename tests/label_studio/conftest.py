"""A real Label Studio for the whole test session, started from the cached template.

``scripts/install_label_studio`` is idempotent: the first run on a machine installs Label
Studio (~1 min) and migrates the template (~30 s); later sessions only copy the template
and start (~3-4 s).  If Label Studio cannot be installed or started the fixture FAILS:
these tests exist to prove the integration works, so a silent skip would hide a break.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from annotations.errors import DomainError
from annotations.label_studio.client import LabelStudioClient
from annotations.label_studio.server import LabelStudioServer, free_port

ROOT = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = ROOT / "scripts" / "install_label_studio"


@dataclass(frozen=True)
class LabelStudioInstance:
    """What tests need from the session's server."""

    url: str
    token: str
    admin_email: str
    admin_password: str
    server: LabelStudioServer

    def client(self, **kwargs) -> LabelStudioClient:
        return LabelStudioClient(self.url, self.token, **kwargs)


def _install() -> None:
    try:
        proc = subprocess.run([str(INSTALL_SCRIPT)], cwd=ROOT, capture_output=True, text=True,
                              timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"scripts/install_label_studio could not run: {exc}", pytrace=False)
    if proc.returncode != 0:
        pytest.fail(f"scripts/install_label_studio failed (exit {proc.returncode}):\n"
                    f"{(proc.stdout + proc.stderr)[-3000:]}", pytrace=False)


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory) -> Iterator[LabelStudioInstance]:
    _install()
    password = secrets.token_urlsafe(12)
    token = secrets.token_hex(20)
    server = None
    for _ in range(3):  # a free port can be taken between probing and binding
        server = LabelStudioServer(
            tmp_path_factory.mktemp("label-studio"), free_port(),
            username="admin@example.org", password=password, token=token,
        )
        try:
            server.start()
            break
        except DomainError as exc:
            if exc.code != "label_studio_port_busy":
                pytest.fail(f"Label Studio did not start: {exc}", pytrace=False)
    else:
        pytest.fail("Label Studio did not start: no free port after 3 tries", pytrace=False)
    try:
        yield LabelStudioInstance(server.url, token, "admin@example.org", password, server)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def ls_client(label_studio) -> LabelStudioClient:
    return label_studio.client()
