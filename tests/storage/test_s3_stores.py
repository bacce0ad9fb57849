"""The stores on a real S3 API (moto's server on loopback): ingest, quarantine, image
URLs, the worker cache and model versions go through the bucket, and nothing lands in
the local data folders except the bounded cache."""

from __future__ import annotations

import datetime as dt
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone

from annotations import storage_cache
from annotations.errors import DomainError
from annotations.models import Image, IngestItem
from annotations.services import signing, storage
from annotations.services.quarantine import quarantine_purge
from tests.conftest import ingest_paths, write_png
from tests.s3 import local_files

pytestmark = pytest.mark.django_db


def _local_roots():
    return (settings.MEDIA_ROOT, settings.STAGING_ROOT, settings.QUARANTINE_ROOT)


def _ingest(project, tmp_path, n: int = 3, bad: int = 1):
    inputs = [write_png(tmp_path / "in" / f"film{i}.png", seed=40 + i) for i in range(n)]
    (tmp_path / "in").mkdir(exist_ok=True)
    for i in range(bad):
        path = tmp_path / "in" / f"bad{i}.dcm"
        path.write_bytes(b"not an image, patient MUSTERMANN " + bytes([i]))
        inputs.append(path)
    return ingest_paths(project, inputs)


def _age_cache(seconds: float) -> None:
    """Make every cached entry look ``seconds`` old (eviction spares fresh ones)."""
    when = time.time() - seconds
    for path in Path(settings.STORAGE_CACHE_ROOT).rglob("*"):
        if path.is_file():
            os.utime(path, (when, when))


def test_ingest_on_s3_writes_the_bucket_and_nothing_local_but_the_cache(s3, project,
                                                                          tmp_path):
    server, bucket = s3
    batch = _ingest(project, tmp_path)
    items = list(batch.items.order_by("seq"))
    assert [i.status for i in items] == ["imported"] * 3 + ["quarantined"]
    objects = server.objects(bucket)
    for image in Image.objects.filter(project=project):
        for key in (image.display_path, image.thumbnail_path):
            assert objects[f"media/{key}"] > 0
        assert storage.read_display(image).shape == (image.display_height, image.display_width)
    bad = items[-1]
    assert objects[f"quarantine/{bad.quarantine_path}"] > 0
    # the staged copies went with their items: staging is empty again
    assert not server.objects(bucket, "staging/")
    # nothing under the local media, staging or quarantine folders; the cache holds
    # what was read (display images), never a raw original
    assert local_files(*_local_roots()) == []
    cached = local_files(settings.STORAGE_CACHE_ROOT)
    assert cached and all("quarantine" not in p.parts and "staging" not in p.parts
                          for p in cached)


def test_signed_route_streams_from_s3_and_still_expires(s3, project, tmp_path):
    _ingest(project, tmp_path, n=1, bad=0)
    image = Image.objects.get(project=project)
    server, bucket = s3
    body = server.client().get_object(Bucket=bucket, Key=f"media/{image.display_path}")[
        "Body"].read()
    served = Client().get(signing.signed_image_path(image.pseudo_id, "display"))
    assert served.status_code == 200 and b"".join(served.streaming_content) == body
    expired = signing.signed_image_path(image.pseudo_id, "display", ttl=10,
                                        now=time.time() - 60)
    assert Client().get(expired).status_code == 403
    # the object gone from the bucket: a clear 404, not a server error
    server.client().delete_object(Bucket=bucket, Key=f"media/{image.display_path}")
    gone = Client().get(signing.signed_image_path(image.pseudo_id, "display"))
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "unavailable"


def test_presigned_urls_name_their_expiry_and_fetch_from_the_store(s3, project, tmp_path,
                                                                    settings):
    server, bucket = s3
    _ingest(project, tmp_path, n=1, bad=0)
    image = Image.objects.get(project=project)
    settings.IMAGE_URLS = "presigned"
    url = signing.image_url(image, "display", ttl=120)
    assert url.startswith(server.url + "/")
    query = parse_qs(urlparse(url).query)
    # SigV4: the store refuses the URL once X-Amz-Date + X-Amz-Expires has passed
    assert query["X-Amz-Expires"] == ["120"] and query["X-Amz-Signature"]
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback
        fetched = response.read()
    assert fetched == storage.read_bytes(storage.MEDIA, image.display_path)
    # longer than S3 can sign (Label Studio's task URLs): the platform's own route
    long = signing.image_url(image, "display", ttl=30 * 24 * 3600)
    assert long.startswith(settings.PUBLIC_BASE_URL) and "sig=" in long


def test_presigned_needs_an_s3_store(settings):
    settings.IMAGE_URLS = "presigned"
    with pytest.raises(DomainError):
        storage.presigned_url(storage.MEDIA, "x.png", 60)


def test_cache_stays_within_its_budget_and_refetches_what_it_evicted(s3, settings):
    settings.STORAGE_CACHE_MAX_BYTES = 300_000
    blobs = {f"blob/{i}.bin": np.random.default_rng(i).bytes(100_000) for i in range(8)}
    for key, data in blobs.items():
        storage.put(storage.MEDIA, key, data)
    for key in blobs:
        storage.local_path(storage.MEDIA, key)
        _age_cache(120)  # each older than the next: a clear least-recently-used order
    storage_cache.sweep()
    kept = local_files(settings.STORAGE_CACHE_ROOT)
    assert sum(p.stat().st_size for p in kept) <= settings.STORAGE_CACHE_MAX_BYTES
    assert len(kept) < len(blobs)
    for key, data in blobs.items():  # evicted or not, every read is whole and right
        assert storage.local_path(storage.MEDIA, key).read_bytes() == data


def test_cache_never_evicts_what_was_just_read(s3, settings):
    settings.STORAGE_CACHE_MAX_BYTES = 1
    storage.put(storage.MEDIA, "fresh.bin", b"x" * 1000)
    path = storage.local_path(storage.MEDIA, "fresh.bin")
    storage_cache.sweep()
    assert path.read_bytes() == b"x" * 1000  # a batch being read right now stays


def test_a_model_version_reaches_another_host_whole_through_the_store(s3, settings,
                                                                        tmp_path):
    server, bucket = s3
    folder = storage.folder_for_write(storage.MODELS, "proj-v1")
    (folder / "config.yaml").write_text("MODEL: {}\n")
    (folder / "weights").mkdir()
    (folder / "weights" / "model.pth").write_bytes(b"w" * 5000)
    storage.folder_publish(storage.MODELS, "proj-v1", folder)
    assert set(server.objects(bucket, "models/")) == {
        "models/proj-v1/config.yaml", "models/proj-v1/weights/model.pth",
        "models/proj-v1/.published"}
    # another host: an empty cache fetches the whole folder
    settings.STORAGE_CACHE_ROOT = tmp_path / "other-host-cache"
    there = storage.model_dir("proj-v1")
    assert (there / "config.yaml").read_text() == "MODEL: {}\n"
    assert (there / "weights" / "model.pth").read_bytes() == b"w" * 5000
    with pytest.raises(DomainError) as missing:
        storage.model_dir("proj-v2")
    assert missing.value.code == "not_found"
    # a folder still uploading (no marker yet) is not there for another host either
    storage.put(storage.MODELS, "proj-v3/config.yaml", b"MODEL: {}\n")
    with pytest.raises(DomainError):
        storage.model_dir("proj-v3")
    with pytest.raises(DomainError):
        storage.folder_delete(storage.MODELS, "/")
    storage.folder_delete(storage.MODELS, "proj-v1")
    assert not server.objects(bucket, "models/proj-v1/") and not there.exists()


def test_quarantine_purge_on_s3_deletes_old_originals_and_orphans_only(s3, project,
                                                                         tmp_path):
    server, bucket = s3
    batch = _ingest(project, tmp_path, n=0, bad=2)
    old, new = batch.items.order_by("seq")
    now = timezone.now()
    IngestItem.objects.filter(pk=old.pk).update(quarantined_at=now - dt.timedelta(days=40))
    storage.put(storage.QUARANTINE, "999/orphan.bin", b"orphan")
    # an orphan is judged by its age in the store: a purge a month from now takes it
    report = quarantine_purge(now=now + dt.timedelta(days=31), retention_days=30)
    assert (report.originals, report.orphans) == (2, 1)
    assert not server.objects(bucket, "quarantine/")
    report = quarantine_purge(now=now, retention_days=30)
    assert (report.originals, report.orphans) == (0, 0)
    assert IngestItem.objects.filter(pk=new.pk, quarantine_path="").exists()


def test_a_row_cannot_name_a_local_path_on_an_s3_store(s3, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("must survive")
    assert storage.stored_key(storage.STAGING, str(victim)) is None
    assert storage.stored_key(storage.STAGING, "../media/x.png") is None
    assert storage.stored_key(storage.STAGING, "7/000001.bin") == "7/000001.bin"
