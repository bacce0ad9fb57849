"""The PHI probe set through the real ingest path, then every store scanned for every probe.

Stores: every row of every table, every file under MEDIA_ROOT and STAGING_ROOT,
every log record (pydicom's included), and the responses of the image, ingest,
quarantine, browse, dashboard and audit endpoints plus the image files they link.
Only the quarantine folder may hold probes (raw originals, by design): it is
checked to be private and outside MEDIA_ROOT instead.
"""

from __future__ import annotations

import logging
import stat
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.db import connection
from rest_framework.test import APIClient

from annotations.imaging.synthetic.phi_probes import write_probe_set
from annotations.models import Image, IngestItem
from annotations.services import ingest
from tests.conftest import ingest_paths

pytestmark = pytest.mark.django_db


@pytest.fixture
def probe_set(tmp_path_factory):
    return write_probe_set(tmp_path_factory.mktemp("probes"))


def _database_rows() -> tuple[list[str], int]:
    rows = []
    tables = connection.introspection.table_names()
    with connection.cursor() as cur:
        for table in tables:
            cur.execute(f'SELECT * FROM "{table}"')
            rows.extend(repr(row) for row in cur.fetchall())
    return rows, len(tables)


def _files(*roots: Path) -> list[tuple[Path, bytes]]:
    return [(p, p.read_bytes()) for root in roots if Path(root).is_dir()
            for p in sorted(Path(root).rglob("*")) if p.is_file()]


def _served(client: APIClient, url: str) -> bytes:
    link = urlsplit(url)
    response = client.get(f"{link.path}?{link.query}")
    return b"".join(response.streaming_content) if response.streaming else response.content


def _api_responses(client: APIClient, batch_pk: int) -> list[tuple[str, bytes]]:
    urls = ["/api/projects/test/images/?limit=1000", "/api/projects/test/quarantine/",
            f"/api/ingest-batches/{batch_pk}/", f"/api/ingest-batches/{batch_pk}/items/",
            "/api/projects/test/browse/", "/api/projects/test/dashboard/", "/api/audit/",
            "/api/projects/test/"]
    out = [(url, client.get(url).content) for url in urls]
    for image in Image.objects.all():
        detail = client.get(f"/api/images/{image.pseudo_id}/")
        out.append((f"/api/images/{image.pseudo_id}/", detail.content))
        layers = f"/api/images/{image.pseudo_id}/layers/"
        out.append((layers, client.get(layers).content))
        for key in ("display_url", "thumbnail_url"):  # the image files themselves
            out.append((key, _served(client, detail.json()[key])))
    return out


def test_no_probe_reaches_any_store(project, admin_user, probe_set, caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="pydicom")
    folder = probe_set.files[0].parent
    batch = ingest_paths(project, [folder])

    by_key = {i.source_key: i for i in IngestItem.objects.filter(batch=batch)}
    for path in probe_set.files:
        item = by_key[ingest.source_key(path.name)]
        status, reasons = probe_set.expected[path.name]
        assert item.status == status, (path.name, item.reason, item.detail)
        assert item.reason in (reasons.split("|") if reasons else [""]), path.name
    assert Image.objects.count() == 3

    client = APIClient()
    client.force_authenticate(admin_user)
    rows, tables = _database_rows()
    files = _files(settings.MEDIA_ROOT, settings.STAGING_ROOT)
    responses = _api_responses(client, batch.pk)
    logs = [r.getMessage() for r in caplog.records] + [caplog.text]
    assert len(files) == 3 * 3  # de-identified DICOM, display PNG, thumbnail per image
    assert len(responses) >= 8 + 3 * 2 + 3 * 2

    leaks = []
    for probe, where in probe_set.probes.items():
        needle = probe.encode()
        leaks += [("database", where) for row in rows if probe in row]
        leaks += [(str(p.relative_to(p.parents[2])), where) for p, blob in files
                  if needle in blob]
        leaks += [("log", where) for line in logs if probe in line]
        leaks += [(url, where) for url, body in responses if needle in body]
    assert leaks == []

    # The raw originals: in quarantine only, private, outside anything served.
    quarantined = _files(settings.QUARANTINE_ROOT)
    assert len(quarantined) == 4
    assert not Path(settings.QUARANTINE_ROOT).resolve().is_relative_to(
        Path(settings.MEDIA_ROOT).resolve())
    for path, _ in quarantined:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    print(f"PHI probes: {len(probe_set.probes)} probes in {len(probe_set.files)} files; "
          f"scanned {len(rows)} rows of {tables} tables, {len(files)} files, "
          f"{len(caplog.records)} log records, {len(responses)} API responses")
