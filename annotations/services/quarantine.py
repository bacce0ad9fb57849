"""Quarantined originals: kept aside for an admin, then purged on schedule.

A quarantined file is the raw original, with every identifier that
de-identification would have removed.  So it lives in its own store, outside the
media store (no URL resolves into it; on S3 its own bucket when
``CXR_S3_QUARANTINE_BUCKET`` names one), readable by the platform's own user only
locally (0600 files in 0700 folders), listed to admins only (the quarantine API shows the
reason and message, never the file), and deleted
``CXR_QUARANTINE_RETENTION_DAYS`` after it arrived.  The ``IngestItem`` row,
with its reason, message and times, stays: the dashboard's counts and the
admin's record outlive the file.

The same rule covers the staged copy of an item whose task failed for good
(it is a raw original too) and any file under the quarantine folder that no
row points to (a crash between the move and the row update).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from annotations.errors import DomainError
from annotations.models import IngestItem
from annotations.services import storage
from annotations.services.audit import audit_record

logger = logging.getLogger(__name__)


def original_keep(staged: str, *, batch_id: int) -> str:
    """Move a staged original (its staging key) into quarantine; returns its key there."""
    dest = f"{batch_id}/{staged.rsplit('/', 1)[-1]}"
    storage.move(storage.STAGING, staged, storage.QUARANTINE, dest)
    return dest


@dataclass(frozen=True)
class PurgeReport:
    """What one purge deleted (counts only: file names are not for logs)."""

    retention_days: int
    originals: int
    failed_staged: int
    orphans: int
    kept: int


def _delete(alias: str, value: str) -> bool:
    """Delete the file a row names, only inside its store: a row never makes the purge
    delete elsewhere (``storage.stored_key``)."""
    key = storage.stored_key(alias, value)
    if key is None or not storage.exists(alias, key):
        return False
    storage.delete(alias, key)
    return True


def _purge_originals(cutoff: dt.datetime, now: dt.datetime) -> int:
    due = IngestItem.objects.exclude(quarantine_path="").filter(
        Q(quarantined_at__lt=cutoff) | Q(quarantined_at__isnull=True, updated_at__lt=cutoff))
    count = 0
    for pk, path in due.values_list("pk", "quarantine_path").iterator():
        _delete(storage.QUARANTINE, path)
        # guarded: only the path this purge saw is cleared
        count += IngestItem.objects.filter(pk=pk, quarantine_path=path).update(
            quarantine_path="", original_purged_at=now)
    return count


def _purge_failed_staged(cutoff: dt.datetime, now: dt.datetime) -> int:
    count = 0
    failed = IngestItem.objects.filter(
        status=IngestItem.Status.FAILED, updated_at__lt=cutoff, original_purged_at__isnull=True,
    ).exclude(staged_path="")
    for pk, path in failed.values_list("pk", "staged_path").iterator():
        if _delete(storage.STAGING, path):
            count += 1
        IngestItem.objects.filter(pk=pk).update(original_purged_at=now)
    return count


def _purge_orphans(cutoff: dt.datetime) -> int:
    referenced = {storage.stored_key(storage.QUARANTINE, p) for p in IngestItem.objects
                  .exclude(quarantine_path="").values_list("quarantine_path", flat=True)}
    count = 0
    for key in storage.keys(storage.QUARANTINE):
        if key not in referenced and storage.modified(storage.QUARANTINE, key) < cutoff:
            storage.delete(storage.QUARANTINE, key)
            count += 1
    if not storage.is_remote(storage.QUARANTINE):  # a folder store keeps empty folders
        root = Path(settings.QUARANTINE_ROOT)
        for folder in sorted((p for p in root.rglob("*") if p.is_dir()), reverse=True):
            if not any(folder.iterdir()):
                folder.rmdir()
    return count


def quarantine_purge(*, now: dt.datetime | None = None, retention_days: int | None = None,
                     actor: Any = None) -> PurgeReport:
    """Delete quarantined originals older than the retention; keep their rows.

    Idempotent: a second run deletes nothing more.  ``now`` and
    ``retention_days`` default to the clock and ``CXR_QUARANTINE_RETENTION_DAYS``.
    """
    days = settings.QUARANTINE_RETENTION_DAYS if retention_days is None else retention_days
    if days < 0:
        raise DomainError("invalid_argument", "the retention must be zero days or more")
    now = now or timezone.now()
    cutoff = now - dt.timedelta(days=days)
    report = PurgeReport(
        retention_days=days,
        originals=_purge_originals(cutoff, now),
        failed_staged=_purge_failed_staged(cutoff, now),
        orphans=_purge_orphans(cutoff),
        kept=IngestItem.objects.exclude(quarantine_path="").count(),
    )
    if report.originals or report.failed_staged or report.orphans:
        audit_record(action="quarantine.purge", actor=actor, detail=asdict(report))
    logger.info("quarantine purge: %s", asdict(report))
    return report
