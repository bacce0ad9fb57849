"""A real S3 API server on loopback for the object-storage tests: moto in server mode, a
process of its own started by the tests (boto3 and django-storages talk HTTP to it, as
they would to MinIO or AWS), never a mocked client.

If it cannot start, the test FAILS with its log: these tests exist to prove the S3 path.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from annotations.label_studio.server import free_port

ACCESS_KEY, SECRET_KEY = "cxr-test-access", "cxr-test-secret-key"


@dataclass
class S3Server:
    url: str
    process: subprocess.Popen
    log: Path

    def client(self):
        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)

    def new_bucket(self) -> str:
        name = f"cxr-{secrets.token_hex(6)}"
        self.client().create_bucket(Bucket=name)
        return name

    def objects(self, bucket: str, prefix: str = "") -> dict[str, int]:
        """Every object under ``prefix``: key -> size."""
        out: dict[str, int] = {}
        for page in self.client().get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix):
            out.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
        return out

    def env(self, bucket: str) -> dict[str, str]:
        """The platform's variables for this server and bucket."""
        return {"CXR_STORAGE": "s3", "CXR_S3_ENDPOINT_URL": self.url, "CXR_S3_BUCKET": bucket,
                "CXR_S3_ACCESS_KEY_ID": ACCESS_KEY, "CXR_S3_SECRET_ACCESS_KEY": SECRET_KEY}


def start_s3_server(log: Path) -> S3Server:
    port = free_port()
    out = open(log, "ab")  # noqa: SIM115 - the server owns it until it exits
    env = {**os.environ, "MOTO_PORT": str(port)}
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=out, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(url + "/moto-api/", timeout=2):  # noqa: S310 - loopback
                return S3Server(url, proc, log)
        except OSError:
            time.sleep(0.2)
    proc.kill()
    pytest.fail(f"the S3 server (moto) did not start:\n{log.read_text()[-3000:]}",
                pytrace=False)


def stop_s3_server(server: S3Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(10)
    except subprocess.TimeoutExpired:
        server.process.kill()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[S3Server]:
    server = start_s3_server(tmp_path_factory.mktemp("s3") / "moto.log")
    yield server
    stop_s3_server(server)


@pytest.fixture
def s3(s3_server, settings, monkeypatch) -> Iterator[tuple[S3Server, str]]:
    """This test's stores on the loopback S3 server (a fresh bucket): the settings switch
    as the environment would switch them (``cxr_platform.settings.storage_config``)."""
    from cxr_platform import settings as platform_settings

    bucket = s3_server.new_bucket()
    for key, value in s3_server.env(bucket).items():
        monkeypatch.setenv(key, value)
    settings.STORAGE_BACKEND = "s3"
    settings.STORAGES = platform_settings.storage_config("s3")
    yield s3_server, bucket


def local_files(*roots: Path) -> list[Path]:
    """Every file under ``roots`` (what a test expects to stay empty)."""
    return sorted(p for root in roots if Path(root).exists()
                  for p in Path(root).rglob("*") if p.is_file())
