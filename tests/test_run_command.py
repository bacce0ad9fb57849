"""The README's run command works on the embedded defaults: it sets up, loads the
demo, prints the URL and logins, and serves the platform."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_scripts_run_serves_demo(tmp_path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CXR_") and k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    if "CXR_CACHE_DIR" in os.environ:
        env["CXR_CACHE_DIR"] = os.environ["CXR_CACHE_DIR"]
    ls_port = _free_port()
    ml_port = _free_port()
    env.update(CXR_DATA_DIR=str(tmp_path / "var"), CXR_PORT=str(port),
               CXR_LABEL_STUDIO_PORT=str(ls_port), CXR_ML_BACKEND_PORT=str(ml_port))
    proc = subprocess.Popen([str(ROOT / "scripts" / "run")], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        health = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/", timeout=2) as r:
                    health = json.loads(r.read())
                    break
            except OSError:
                time.sleep(1)
        assert health == {"status": "ok"}, "the platform did not come up"
        token_req = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/auth/token/", method="POST",
            data=json.dumps({"username": "admin", "password": _admin_password(tmp_path)}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(token_req, timeout=10) as r:
            token = json.loads(r.read())["token"]
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/projects/demo/images/",
                                     headers={"Authorization": f"Token {token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert json.loads(r.read())["count"] == 12
        # the web app: sign-in page, and its chart library served by the platform itself
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
            assert r.url.endswith("/login/?next=/") or r.url.endswith("/login/")
            assert b"Sign in" in r.read()
        with urllib.request.urlopen(
                f"http://127.0.0.1:{port}/static/vendor/chart.js/chart.umd.min.js",
                timeout=10) as r:
            assert r.status == 200 and len(r.read()) > 100_000
        # the Label Studio it started is up and holds the demo readers' workspaces
        with urllib.request.urlopen(f"http://127.0.0.1:{ls_port}/health", timeout=5) as r:
            assert json.loads(r.read())["status"] == "UP"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert f"http://127.0.0.1:{port}/admin/" in out
    assert "radiologist R1" in out and "admin / " in out
    # each reader's workspace link goes through the platform's sign-in, never a password
    assert f"http://127.0.0.1:{port}/api/me/workspaces/" in out
    assert "Label Studio stopped" in out
    assert f"ML backend: http://127.0.0.1:{ml_port}" in out and "ML backend stopped" in out


def _admin_password(tmp_path: Path) -> str:
    return json.loads((tmp_path / "var" / "demo_credentials.json").read_text())["admin"]
