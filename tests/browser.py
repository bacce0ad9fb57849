"""Headless Chromium for end-to-end tests, driven by Selenium.

Uses the distribution's ``chromium`` and ``chromium-driver`` packages (``scripts/setup``
installs them) and never lets Selenium Manager download a browser or a driver
(``SE_OFFLINE``): tests run offline.  A missing browser is a FAILURE with the install
step in the message, never a skip: a browser test that silently does not run proves
nothing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

try:  # re-exported for tests, so that a missing selenium fails with the install step
    from selenium import webdriver
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # chromium_driver() reports it
    webdriver = Service = None
    By = WebDriverWait = None
    TimeoutException = Exception

__all__ = ["By", "TimeoutException", "WebDriverWait", "artifact_dir", "chromium_driver"]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
INSTALL_HINT = ("install them with scripts/setup (apt-get install -y chromium chromium-driver; "
                "pip install selenium)")

#: Flags that work headless, as root, in a container, with no network beyond loopback.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
)

ROOT = Path(__file__).resolve().parents[1]


def artifact_dir() -> Path:
    """Where tests leave screenshots: ``$CXR_TEST_ARTIFACTS`` or ``var/test-artifacts``."""
    path = Path(os.environ.get("CXR_TEST_ARTIFACTS") or ROOT / "var" / "test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _binary(default: str, name: str) -> str | None:
    return default if Path(default).is_file() else shutil.which(name)


@contextmanager
def chromium_driver(tmp_path: Path, *, size: tuple[int, int] = (1400, 1000),
                    page_load_timeout: float = 60.0) -> Iterator:
    """A headless Chromium WebDriver with a fresh profile under ``tmp_path``; quits on exit."""
    chromium, chromedriver = _binary(CHROMIUM, "chromium"), _binary(CHROMEDRIVER, "chromedriver")
    missing = [name for name, path in (("chromium", chromium), ("chromedriver", chromedriver))
               if path is None]
    if missing:
        pytest.fail(f"headless browser missing: {' and '.join(missing)} not found; "
                    f"{INSTALL_HINT}", pytrace=False)
    if webdriver is None:
        pytest.fail(f"selenium is not installed; {INSTALL_HINT}", pytrace=False)
    saved = os.environ.get("SE_OFFLINE")
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not go online
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = tmp_path / "chromium-profile"
    profile.mkdir(parents=True, exist_ok=True)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={size[0]},{size[1]}")
    service = Service(chromedriver, log_output=str(tmp_path / "chromedriver.log"))
    try:
        driver = webdriver.Chrome(service=service, options=options)
    finally:
        if saved is None:
            os.environ.pop("SE_OFFLINE", None)
        else:
            os.environ["SE_OFFLINE"] = saved
    try:
        driver.set_page_load_timeout(page_load_timeout)
        yield driver
    finally:
        driver.quit()
