"""``python manage.py purge_quarantine [--days N]``: delete expired quarantined originals."""

from __future__ import annotations

from dataclasses import asdict

from django.core.management.base import BaseCommand, CommandError

from annotations.errors import DomainError
from annotations.services.quarantine import quarantine_purge


class Command(BaseCommand):
    help = ("Delete quarantined originals older than CXR_QUARANTINE_RETENTION_DAYS "
            "(the items and their reasons are kept). Celery beat runs the same daily.")

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, default=None,
                            help="retention in days (default: CXR_QUARANTINE_RETENTION_DAYS)")

    def handle(self, *args, days, **opts):
        try:
            report = quarantine_purge(retention_days=days)
        except DomainError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from exc
        self.stdout.write(" ".join(f"{k}={v}" for k, v in asdict(report).items()))
