"""The server helper: template copy, health, busy ports, start-up failures, clean stop."""

from __future__ import annotations

import socket
import stat
import time

import pytest
import requests

from annotations.errors import DomainError
from annotations.label_studio.server import (
    LabelStudioInstall,
    LabelStudioServer,
    copy_template,
    free_port,
    port_is_free,
)

BRIDGE = "b" * 40


def test_session_server_is_healthy(label_studio):
    assert requests.get(f"{label_studio.url}/health", timeout=5).json() == {"status": "UP"}
    assert label_studio.server.healthy()
    assert label_studio.server.startup_seconds < 60
    data_dir = label_studio.server.data_dir
    assert (data_dir / "label_studio.sqlite3").is_file()
    assert not (data_dir / ".complete").exists()


def test_admin_can_log_in_with_token(label_studio):
    me = requests.get(f"{label_studio.url}/api/current-user/whoami", timeout=5,
                      headers={"Authorization": f"Token {label_studio.token}"}).json()
    assert me["email"] == label_studio.admin_email


def test_busy_port_is_refused_up_front(label_studio, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert not port_is_free(port)
        server = LabelStudioServer(tmp_path / "d", port, username="a@b.org", password="pw",
                                   token="t" * 20, bridge_secret=BRIDGE)
        with pytest.raises(DomainError) as err:
            server.start()
    assert err.value.code == "label_studio_port_busy"
    assert not (tmp_path / "d").exists()


def test_copy_template_skips_markers_and_keeps_existing_data(tmp_path):
    template = tmp_path / "template"
    (template / "media").mkdir(parents=True)
    (template / "label_studio.sqlite3").write_text("db")
    (template / ".env").write_text("SECRET_KEY=shared")
    (template / ".complete").touch()
    target = tmp_path / "data"
    assert copy_template(template, target)
    assert sorted(p.name for p in target.iterdir()) == ["label_studio.sqlite3", "media"]
    (target / "label_studio.sqlite3").write_text("changed")
    assert not copy_template(template, target)
    assert (target / "label_studio.sqlite3").read_text() == "changed"


def _fake_install(tmp_path, script: str) -> LabelStudioInstall:
    install = LabelStudioInstall(tmp_path / "venv", tmp_path / "template")
    (install.venv / "bin").mkdir(parents=True)
    install.template.mkdir()
    (install.venv / ".complete").touch()
    (install.template / ".complete").touch()
    install.executable.write_text("#!/bin/sh\n" + script)
    install.executable.chmod(install.executable.stat().st_mode | stat.S_IXUSR)
    return install


def test_dying_server_reports_its_log(tmp_path, monkeypatch):
    monkeypatch.setenv("USERNAME", "someone")
    monkeypatch.setenv("HOST", "example.org")
    install = _fake_install(tmp_path, 'echo "boom: USERNAME=$USERNAME HOST=$HOST"; exit 3\n')
    server = LabelStudioServer(tmp_path / "data", free_port(), username="a@b.org",
                               password="pw", token="t" * 20, bridge_secret=BRIDGE, install=install)
    with pytest.raises(DomainError) as err:
        server.start()
    assert err.value.code == "label_studio_start_failed"
    assert "status 3" in err.value.message and "boom" in err.value.message
    assert "USERNAME= HOST=" in err.value.message  # bare names never reach Label Studio


def test_silent_server_times_out_and_is_killed(tmp_path):
    install = _fake_install(tmp_path, "echo waiting; exec sleep 60\n")
    server = LabelStudioServer(tmp_path / "data", free_port(), username="a@b.org",
                               password="pw", token="t" * 20, bridge_secret=BRIDGE, install=install,
                               startup_timeout=1.5)
    began = time.monotonic()
    with pytest.raises(DomainError, match="did not report UP") as err:
        server.start()
    assert "waiting" in err.value.message
    assert time.monotonic() - began < 10 and server.process is None


def test_missing_install_names_the_script(tmp_path):
    server = LabelStudioServer(tmp_path / "data", free_port(), username="a@b.org",
                               password="pw", token="t" * 20, bridge_secret=BRIDGE,
                               install=LabelStudioInstall(tmp_path / "v", tmp_path / "t"))
    with pytest.raises(DomainError, match="install_label_studio"):
        server.start()


def test_token_length_is_checked(tmp_path):
    with pytest.raises(DomainError):
        LabelStudioServer(tmp_path, 1, username="a@b.org", password="pw", token="short",
                          bridge_secret=BRIDGE)


def test_environment_is_offline_and_loopback(tmp_path, monkeypatch):
    for name in ("DEBUG", "USER_TOKEN", "DJANGO_SETTINGS_MODULE", "SECRET_KEY", "PYTHONPATH"):
        monkeypatch.setenv(name, "leak")
    server = LabelStudioServer(tmp_path, 18999, username="a@b.org", password="pw",
                               token="t" * 20, bridge_secret=BRIDGE)
    env = server.environment()
    assert "leak" not in env.values() and "PATH" in env
    assert env["LABEL_STUDIO_HOST"] == "http://127.0.0.1:18999"
    assert env["LATEST_VERSION_CHECK"] == "false" and env["SENTRY_DSN"] == ""
    assert env["SSRF_PROTECTION_ENABLED"] == "false" and env["ML_BLOCK_LOCAL_IP"] == "false"
    # the bridge, and nobody signs up into the first organization
    assert env["DJANGO_SETTINGS_MODULE"] == "cxr_bridge.settings"
    assert env["PYTHONPATH"].endswith("label_studio_bridge") and env["CXR_BRIDGE_SECRET"] == BRIDGE
    assert env["LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK"] == "true"
