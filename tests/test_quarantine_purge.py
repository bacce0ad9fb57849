"""Quarantined originals are purged after the retention; their rows and reasons stay."""

from __future__ import annotations

import datetime as dt
import io
import os
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone

from annotations.models import AuditEvent, IngestItem
from annotations.services.quarantine import quarantine_purge
from tests.conftest import ingest_paths

pytestmark = pytest.mark.django_db
NOW = timezone.now()


def _file(key: str) -> Path:
    """Where the local quarantine store keeps the original a row names by key."""
    return Path(settings.QUARANTINE_ROOT) / key


def _age(path: Path, days: float) -> None:
    when = (NOW - dt.timedelta(days=days)).timestamp()
    os.utime(path, (when, when))


@pytest.fixture
def quarantined(project, tmp_path):
    """Four quarantined items: 40 and 10 days old, a legacy one without a time, and one
    whose row was tampered with to point outside the quarantine folder."""
    inputs = []
    for i in range(4):
        path = tmp_path / "in" / f"bad{i}.dcm"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"not an image, patient MUSTERMANN " + bytes([i]))
        inputs.append(path)
    batch = ingest_paths(project, inputs)
    items = list(batch.items.order_by("seq"))
    assert [i.status for i in items] == ["quarantined"] * 4
    assert all(_file(i.quarantine_path).is_file() and i.quarantined_at for i in items)
    assert all(not Path(i.quarantine_path).is_absolute() for i in items)  # keys, not paths
    old, new, legacy, tampered = items
    IngestItem.objects.filter(pk=old.pk).update(quarantined_at=NOW - dt.timedelta(days=40))
    IngestItem.objects.filter(pk=new.pk).update(quarantined_at=NOW - dt.timedelta(days=10))
    IngestItem.objects.filter(pk=legacy.pk).update(
        quarantined_at=None, updated_at=NOW - dt.timedelta(days=31))
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("must survive")
    IngestItem.objects.filter(pk=tampered.pk).update(
        quarantine_path=str(outside), quarantined_at=NOW - dt.timedelta(days=99))
    return {"old": old, "new": new, "legacy": legacy, "tampered": tampered,
            "outside": outside}


def test_purge_deletes_originals_past_the_retention_and_keeps_newer_ones(quarantined):
    report = quarantine_purge(now=NOW, retention_days=30)
    old, new, legacy = (IngestItem.objects.get(pk=quarantined[k].pk)
                        for k in ("old", "new", "legacy"))
    assert not _file(quarantined["old"].quarantine_path).exists()
    assert not _file(quarantined["legacy"].quarantine_path).exists()
    assert _file(new.quarantine_path).is_file()
    # the rows stay, with their reason and message, and say when the file went
    for item in (old, legacy):
        assert (item.status, item.reason, item.quarantine_path) == (
            "quarantined", "not_an_image", "")
        assert item.detail and item.original_purged_at == NOW
    assert new.original_purged_at is None
    # a row pointing outside the quarantine folder never makes the purge delete there
    assert quarantined["outside"].read_text() == "must survive"
    assert (report.originals, report.kept) == (3, 1)  # the tampered row is cleared too
    assert AuditEvent.objects.filter(action="quarantine.purge").count() == 1
    again = quarantine_purge(now=NOW, retention_days=30)
    assert (again.originals, again.orphans, again.failed_staged) == (0, 0, 0)


def test_a_row_whose_key_climbs_out_of_the_quarantine_store_deletes_nothing(quarantined,
                                                                          tmp_path):
    victim = Path(settings.QUARANTINE_ROOT).parent / "victim.txt"
    victim.write_text("must survive")
    IngestItem.objects.filter(pk=quarantined["new"].pk).update(
        quarantine_path="../victim.txt", quarantined_at=NOW - dt.timedelta(days=99))
    quarantine_purge(now=NOW, retention_days=30)
    assert victim.read_text() == "must survive"


def test_purge_removes_old_orphans_and_failed_staged_copies(quarantined):
    root = Path(settings.QUARANTINE_ROOT)
    stale, fresh = root / "999" / "stale.bin", root / "999" / "fresh.bin"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"orphan")
    fresh.write_bytes(b"orphan")
    _age(stale, 45)
    failed = quarantined["new"]
    staged = Path(settings.STAGING_ROOT) / "failed.bin"
    staged.parent.mkdir(parents=True, exist_ok=True)
    staged.write_bytes(b"raw original")
    IngestItem.objects.filter(pk=failed.pk).update(
        status="failed", staged_path=str(staged), quarantine_path="",
        updated_at=NOW - dt.timedelta(days=31))
    report = quarantine_purge(now=NOW, retention_days=30)
    assert (report.orphans, report.failed_staged) == (1, 1)
    assert not stale.exists() and fresh.exists() and not staged.exists()


def test_retention_is_a_setting_and_the_command_and_beat_use_it(quarantined, settings):
    from cxr_platform.celery import app

    entry = settings.CELERY_BEAT_SCHEDULE["quarantine-purge"]
    assert entry["task"] == "annotations.tasks.quarantine_purge_task"
    assert entry["task"] in app.tasks
    settings.QUARANTINE_RETENTION_DAYS = 5
    out = io.StringIO()
    call_command("purge_quarantine", stdout=out)
    # 40, 10 and 31 days old all exceed 5 days; the tampered row's file is not touched
    assert "retention_days=5 originals=4" in out.getvalue()
    assert IngestItem.objects.exclude(quarantine_path="").count() == 0
    assert quarantined["outside"].exists()
