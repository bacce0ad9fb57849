"""The whole loop again, with the stores on an S3 server (moto, loopback) and every
platform service (web, the ingest, default and gpu workers, beat) on a data folder of
its own, as if each ran on its own host: they share PostgreSQL, Redis and the bucket
only.  Afterwards no service's folder holds anything but its cache.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cxr_platform.stack import Stack, StackError
from tests.s3 import local_files, start_s3_server, stop_s3_server
from tests.stack.conftest import _install_label_studio, free_ports, stack_env
from tests.stack.test_e2e_loop import run_loop

pytestmark = pytest.mark.slow

#: The platform's services (compose's x-platform anchor): each gets its own "host".
HOSTS = ("platform", "worker-ingest", "worker-default", "worker-gpu", "worker-beat")


@pytest.fixture(scope="module")
def s3_stack(tmp_path_factory) -> Iterator[tuple[Stack, object, str, Path]]:
    _install_label_studio()
    root = tmp_path_factory.mktemp("s3stack")
    server = start_s3_server(root / "moto.log")
    bucket = server.new_bucket()
    hosts = root / "hosts"
    extra = {name: {**server.env(bucket), "CXR_DATA_DIR": str(hosts / name),
                    "CXR_MODEL_DIR": str(hosts / name / "models"),
                    "CXR_MEDIA_ROOT": str(hosts / name / "media")} for name in HOSTS}
    extra["worker-gpu"]["CXR_RUN_HEARTBEAT_SECONDS"] = "1"
    run = secrets.token_hex(4)
    stack = Stack(root / "stack", env=stack_env(), ports=free_ports(), redis="own",
                  databases={"platform": f"s3stack_{run}", "label-studio": f"s3stack_{run}_ls"},
                  extra_env=extra)
    try:
        stack.up()
    except (StackError, OSError, subprocess.SubprocessError) as exc:
        stack.drop_databases()
        stop_s3_server(server)
        pytest.fail(f"the S3 stack did not start: {exc}", pytrace=False)
    try:
        yield stack, server, bucket, hosts
    finally:
        stack.down()
        stack.drop_databases()
        stop_s3_server(server)


def test_the_loop_on_s3_with_every_service_on_its_own_host(s3_stack):
    stack, server, bucket, hosts = s3_stack
    run_loop(stack)
    objects = server.objects(bucket)
    assert any(k.startswith("media/projects/stack-loop/") for k in objects)
    assert any(k.startswith("models/stack-loop-v1/") for k in objects)
    assert not any(k.startswith("staging/") for k in objects)  # every staged file went
    for name in HOSTS:
        # the cache, and the web's collected static assets (the app's own CSS and JS,
        # built at start: code, not data)
        allowed = (hosts / name / "cache", hosts / name / "static")
        stray = [p for p in local_files(hosts / name)
                 if not any(p.is_relative_to(a) for a in allowed)]
        assert stray == [], (name, stray)
    # the workers that read films and models did so through their caches
    assert local_files(hosts / "worker-gpu" / "cache")
    # compose's shared volumes were never written (beat keeps its schedule there)
    volumes = stack.root / "volumes"
    shared = [p for p in local_files(volumes / "platform-data", volumes / "model-data")
              if not p.name.startswith("celerybeat-schedule")]
    assert shared == [], shared
