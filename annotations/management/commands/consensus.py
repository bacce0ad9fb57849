"""``python manage.py consensus --project SLUG [--strategy NAME] [--params JSON]``"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from annotations.errors import DomainError
from annotations.services import projects
from annotations.services.consensus import consensus_run_create, consensus_run_execute


class Command(BaseCommand):
    help = "Run a consensus strategy over a project's current reads (in this process)."

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True)
        parser.add_argument("--strategy")
        parser.add_argument("--params", type=json.loads, default=None,
                            help='JSON object, e.g. \'{"iou_thr": 0.4}\'')

    def handle(self, *args, project, strategy, params, **opts):
        try:
            run = consensus_run_create(project=projects.project_get(project), strategy=strategy,
                                       params=params, enqueue=False)
            run = consensus_run_execute(run_id=run.pk)
        except DomainError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from exc
        if run.status != "done":
            raise CommandError(f"run {run.pk} {run.status}: {run.reason}")
        self.stdout.write(f"run {run.pk} ({run.strategy}): {json.dumps(run.stats)} "
                          f"digest {run.digest[:12]}")
