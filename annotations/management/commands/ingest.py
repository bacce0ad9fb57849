"""``python manage.py ingest PATH [PATH...] --project SLUG``

Stages every file (a file, a folder searched recursively, or a zip), enqueues
one ingest task per file, and shows a progress bar until all are processed.
With no broker configured the tasks run in this process, one after another.
"""

from __future__ import annotations

import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from annotations.errors import DomainError
from annotations.services import ingest, projects


class Command(BaseCommand):
    help = "Import DICOM/PNG/JPEG files into a project (de-identified on the way in)."

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", type=Path)
        parser.add_argument("--project", required=True)
        parser.add_argument("--no-wait", action="store_true",
                            help="enqueue and return without waiting for workers")
        parser.add_argument("--timeout", type=float, default=3600.0)

    def handle(self, *args, paths, project, no_wait, timeout, **opts):
        try:
            proj = projects.project_get(project)
            batch = ingest.ingest_batch_create(project=proj, inputs=paths, source="command")
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        ids = list(batch.items.order_by("seq").values_list("id", flat=True))
        eager = settings.CELERY_TASK_ALWAYS_EAGER
        bar = tqdm(total=len(ids), unit="file", desc=f"batch {batch.pk}",
                   disable=opts.get("verbosity", 1) == 0)
        if eager:  # the handlers ran every file as the batch was created
            bar.update(len(ids))
        if not eager and not no_wait:
            self._wait(batch, bar, timeout)
        bar.close()
        ingest.batch_refresh_status(batch)
        counts = ingest.batch_counts(batch)
        self.stdout.write(
            f"batch {batch.pk}: {counts['imported']} imported, {counts['duplicate']} duplicate, "
            f"{counts['quarantined']} quarantined, {counts['failed']} failed, "
            f"{counts['pending']} pending"
        )
        for item in batch.items.exclude(status__in=["imported", "pending"]).order_by("seq"):
            self.stdout.write(f"  file #{item.seq}: {item.status} ({item.reason}) {item.detail}")

    def _wait(self, batch, bar, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        done = 0
        while time.monotonic() < deadline:
            counts = ingest.batch_counts(batch)
            now_done = counts["total"] - counts["pending"]
            bar.update(now_done - done)
            done = now_done
            if counts["pending"] == 0:
                return
            time.sleep(0.5)
        raise CommandError(f"timed out with {counts['pending']} files still pending")
