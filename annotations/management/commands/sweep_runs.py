"""``python manage.py sweep_runs [--timeout SECONDS] [--pending-timeout SECONDS]``

The periodic sweep (Celery beat runs it every ``CXR_RUN_SWEEP_EVERY`` seconds) by
hand: runs whose heartbeat stopped are re-queued or FAILED, per kind
(``annotations.services.runs``, ``docs/runs.md``).
"""

from __future__ import annotations

from django.core.management.base import BaseCommand

from annotations.services.runs import MODELS, runs_sweep


class Command(BaseCommand):
    help = "Fail or re-queue background runs whose worker was lost."

    def add_arguments(self, parser):
        parser.add_argument("--timeout", type=float,
                            help="seconds without a heartbeat, for every kind "
                                 "(default: CXR_RUN_TIMEOUT_<KIND>)")
        parser.add_argument("--pending-timeout", type=float,
                            help="seconds a pending run may wait (default: "
                                 "CXR_RUN_PENDING_TIMEOUT)")

    def handle(self, *args, timeout, pending_timeout, **opts):
        timeouts = {kind: timeout for kind in MODELS} if timeout is not None else None
        report = runs_sweep(timeouts=timeouts, pending_timeout=pending_timeout)
        for label, entries in (("re-queued", report.requeued), ("failed", report.failed),
                               ("finished", report.finished)):
            names = ", ".join(f"{kind} {pk}" for kind, pk in entries) or "none"
            self.stdout.write(f"{label}: {names}")
