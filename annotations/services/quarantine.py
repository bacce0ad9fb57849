"""Quarantined originals: kept aside for an admin, then purged on schedule.

A quarantined file is the raw original, with every identifier that
de-identification would have removed.  So it lives outside ``MEDIA_ROOT``
(no URL resolves into it), readable by the platform's own user only (0600
files in 0700 folders), listed to admins only (the quarantine API shows the
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
import os
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


def original_keep(staged: Path, *, batch_id: int) -> Path:
    """Move a staged original into quarantine, private to the platform's user."""
    root = Path(settings.QUARANTINE_ROOT)
    dest = root / str(batch_id) / Path(staged).name
    dest.parent.mkdir(parents=True, exist_ok=True)
    for folder in (root, dest.parent):
        os.chmod(folder, 0o700)
    storage.move(Path(staged), dest)
    os.chmod(dest, 0o600)
    return dest


@dataclass(frozen=True)
class PurgeReport:
    """What one purge deleted (counts only: file names are not for logs)."""

    retention_days: int
    originals: int
    failed_staged: int
    orphans: int
    kept: int


def _inside(path: Path, root: Path) -> bool:
    """Whether ``path`` lies under ``root``: a row never makes the purge delete elsewhere."""
    try:
        return path.resolve().is_relative_to(root.resolve())
    except OSError:
        return False


def _delete(path: Path, root: Path) -> bool:
    if not _inside(path, root) or not path.is_file():
        return False
    path.unlink(missing_ok=True)
    return True


def _purge_originals(cutoff: dt.datetime, now: dt.datetime) -> int:
    root = Path(settings.QUARANTINE_ROOT)
    due = IngestItem.objects.exclude(quarantine_path="").filter(
        Q(quarantined_at__lt=cutoff) | Q(quarantined_at__isnull=True, updated_at__lt=cutoff))
    count = 0
    for pk, path in due.values_list("pk", "quarantine_path").iterator():
        _delete(Path(path), root)
        # guarded: only the path this purge saw is cleared
        count += IngestItem.objects.filter(pk=pk, quarantine_path=path).update(
            quarantine_path="", original_purged_at=now)
    return count


def _purge_failed_staged(cutoff: dt.datetime, now: dt.datetime) -> int:
    root = Path(settings.STAGING_ROOT)
    count = 0
    failed = IngestItem.objects.filter(
        status=IngestItem.Status.FAILED, updated_at__lt=cutoff, original_purged_at__isnull=True,
    ).exclude(staged_path="")
    for pk, path in failed.values_list("pk", "staged_path").iterator():
        if _delete(Path(path), root):
            count += 1
        IngestItem.objects.filter(pk=pk).update(original_purged_at=now)
    return count


def _purge_orphans(cutoff: dt.datetime) -> int:
    root = Path(settings.QUARANTINE_ROOT)
    if not root.is_dir():
        return 0
    referenced = {str(Path(p).resolve()) for p in IngestItem.objects.exclude(
        quarantine_path="").values_list("quarantine_path", flat=True)}
    count = 0
    for path in sorted(root.rglob("*")):
        if (path.is_file() and str(path.resolve()) not in referenced
                and path.stat().st_mtime < cutoff.timestamp()):
            path.unlink(missing_ok=True)
            count += 1
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
