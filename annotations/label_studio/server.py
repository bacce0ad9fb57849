"""Start and stop a local Label Studio server from a pre-migrated template data dir.

Why this exists: a fresh Label Studio data dir spends ~30-50 s in migrations, so
``scripts/install_label_studio`` migrates one template dir once and every test session (or
the platform's ``run`` command) copies it and starts in a few seconds.  Label Studio also
has sharp edges that this helper files down in one place:

* it silently moves to port P+1 when P is busy, so we refuse a busy port up front;
* it reads bare ``DEBUG``/``HOST``/``PORT``/``USERNAME``/``PASSWORD``/``USER_TOKEN``, and
  Django's ``DJANGO_SETTINGS_MODULE`` (which pytest-django and the platform set), so the
  child gets a whitelisted environment, not the parent's;
* it phones home (PyPI version check, Sentry, analytics) unless told not to;
* the admin credentials go through ``LABEL_STUDIO_*`` environment variables rather than
  argv, so they do not show up in ``ps``.

The admin user is created on the first start of a data dir only: restarting an existing
data dir with other credentials keeps the old ones (Label Studio's own behaviour).

Pure module: standard library plus ``annotations.errors``; no Django.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from annotations.errors import DomainError

LABEL_STUDIO_VERSION = "1.23.2"

#: The only variables passed through from the parent.  Label Studio reads many bare names
#: (DEBUG, HOST, PORT, USERNAME, SECRET_KEY, DATABASE_NAME, DJANGO_DB...) and Django reads
#: DJANGO_SETTINGS_MODULE: a platform value for any of them would break or reconfigure it.
_PASSED_THROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TZ",
                   "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")

#: The bridge app (``label_studio_bridge/cxr_bridge``) that Label Studio loads on start-up.
BRIDGE_PATH = Path(__file__).resolve().parents[2] / "label_studio_bridge"

#: Files of the template that must not be shared between copies.
_TEMPLATE_SKIP = {".complete", ".env"}


@dataclass(frozen=True)
class LabelStudioInstall:
    """Where ``scripts/install_label_studio`` put the virtualenv and the template data dir."""

    venv: Path
    template: Path

    @classmethod
    def default(cls, cache_dir: str | Path | None = None) -> LabelStudioInstall:
        """The install script's layout under ``$CXR_CACHE_DIR`` (default ~/.cache/cxr-platform)."""
        root = Path(
            cache_dir or os.environ.get("CXR_CACHE_DIR") or Path.home() / ".cache/cxr-platform"
        ) / "label-studio"
        return cls(root / f"venv-{LABEL_STUDIO_VERSION}", root / f"template-{LABEL_STUDIO_VERSION}")

    @property
    def executable(self) -> Path:
        return self.venv / "bin" / "label-studio"

    def check(self) -> None:
        """Raise a DomainError naming the install script when the install is incomplete."""
        for path in (self.venv, self.template):
            if not (path / ".complete").is_file():
                raise DomainError(
                    "label_studio_not_installed",
                    f"{path} is missing or incomplete: run scripts/install_label_studio",
                )


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on ``host:port`` and we could bind it ourselves."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        if probe.connect_ex((host, port)) == 0:
            return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel just considered free (racy by nature; ``start`` re-checks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def copy_template(template: Path, data_dir: Path) -> bool:
    """Populate ``data_dir`` from the template unless it already holds a database.

    Returns True when it copied.  The template's ``.env`` (Label Studio's generated
    SECRET_KEY) is left out so that each data dir gets its own key.
    """
    if (data_dir / "label_studio.sqlite3").exists():
        return False
    data_dir.mkdir(parents=True, exist_ok=True)
    for entry in template.iterdir():
        if entry.name in _TEMPLATE_SKIP:
            continue
        target = data_dir / entry.name
        if entry.is_dir():
            shutil.copytree(entry, target, dirs_exist_ok=True)
        else:
            shutil.copy2(entry, target)
    return True


class LabelStudioServer:
    """One Label Studio process on ``127.0.0.1:port`` over ``data_dir``.

    ``with LabelStudioServer(...) as ls: ...`` starts it and stops it; ``start()``/``stop()``
    do the same by hand.  ``url`` is the base URL, ``log_path`` the server's output.
    """

    def __init__(
        self,
        data_dir: str | Path,
        port: int,
        *,
        username: str,
        password: str,
        token: str,
        bridge_secret: str,
        install: LabelStudioInstall | None = None,
        host: str = "127.0.0.1",
        startup_timeout: float = 120.0,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        if not 6 <= len(token) <= 40:
            # Label Studio silently ignores shorter tokens and the column holds 40 chars.
            raise DomainError("invalid_label_studio_token", "admin token must be 6..40 chars")
        if len(bridge_secret) < 32:
            raise DomainError("invalid_bridge_secret", "the bridge secret must be 32+ chars")
        self.bridge_secret = bridge_secret
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.host = host
        self.username = username
        self.password = password
        self.token = token
        self.install = install or LabelStudioInstall.default()
        self.startup_timeout = startup_timeout
        self.extra_env = dict(extra_env or {})
        self.log_path = self.data_dir / "label-studio.log"
        self.process: subprocess.Popen[bytes] | None = None
        #: Seconds the last ``start()`` took until /health answered UP.
        self.startup_seconds: float | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def environment(self) -> dict[str, str]:
        """The child's environment: a few harmless parent variables, ours, and ``extra_env``."""
        env = {k: os.environ[k] for k in _PASSED_THROUGH if k in os.environ}
        env.update(
            LATEST_VERSION_CHECK="false",
            SENTRY_DSN="",
            FRONTEND_SENTRY_DSN="",
            COLLECT_ANALYTICS="false",
            LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true",
            SSRF_PROTECTION_ENABLED="false",
            ML_BLOCK_LOCAL_IP="false",
            LABEL_STUDIO_BASE_DATA_DIR=str(self.data_dir),
            LABEL_STUDIO_HOST=self.url,
            LABEL_STUDIO_USERNAME=self.username,
            LABEL_STUDIO_PASSWORD=self.password,
            LABEL_STUDIO_USER_TOKEN=self.token,
            # The bridge: one organization per workspace, sign-in only through the
            # platform, nobody joins the first organization by signing up.
            DJANGO_SETTINGS_MODULE="cxr_bridge.settings",
            PYTHONPATH=str(BRIDGE_PATH),
            CXR_BRIDGE_SECRET=self.bridge_secret,
            LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK="true",
            PYTHONUNBUFFERED="1",
        )
        env.update(self.extra_env)
        return env

    def start(self) -> LabelStudioServer:
        """Copy the template if needed, launch, and block until ``/health`` says UP."""
        if self.process is not None:
            raise DomainError("conflict", "Label Studio server already started")
        self.install.check()
        if not port_is_free(self.port, self.host):
            raise DomainError(
                "label_studio_port_busy",
                f"port {self.port} on {self.host} is in use (Label Studio would silently "
                "move to the next port)",
            )
        copy_template(self.install.template, self.data_dir)
        command = [
            str(self.install.executable), "start", "--no-browser",
            "--internal-host", self.host, "--port", str(self.port),
            "--data-dir", str(self.data_dir), "--enable-legacy-api-token",
        ]
        began = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - fixed executable, no shell
                command, cwd=self.data_dir, env=self.environment(), stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        try:
            self._wait_healthy(began)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def _wait_healthy(self, began: float) -> None:
        assert self.process is not None
        while time.monotonic() - began < self.startup_timeout:
            code = self.process.poll()
            if code is not None:
                raise DomainError(
                    "label_studio_start_failed",
                    f"Label Studio exited with status {code} during start-up; log tail:\n"
                    + self.log_tail(),
                )
            if self.healthy():
                return
            time.sleep(0.25)
        raise DomainError(
            "label_studio_start_failed",
            f"Label Studio did not report UP within {self.startup_timeout:.0f} s; log tail:\n"
            + self.log_tail(),
        )

    def healthy(self) -> bool:
        """True when ``GET /health`` answers ``{"status": "UP"}``."""
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:  # noqa: S310
                return json.loads(response.read()).get("status") == "UP"
        except (OSError, ValueError):
            return False

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the whole process group, then SIGKILL what is left after ``timeout``."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                return
            try:
                process.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def __enter__(self) -> LabelStudioServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
