"""``python manage.py train --project SLUG [--preset tiny] [--max-iter N]`` with a progress bar.

Runs the training in this process (the same service the ``gpu`` queue task runs)
and follows the run's progress row.
"""

from __future__ import annotations

import threading

from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from tqdm import tqdm

from annotations.errors import DomainError
from annotations.models import TrainingRun
from annotations.services import projects, training


class Command(BaseCommand):
    help = "Train the project's detector on its final labels; evaluate; maybe promote."

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True)
        parser.add_argument("--preset", choices=["r50_fpn", "tiny"])
        parser.add_argument("--max-iter", type=int)

    def handle(self, *args, project, preset, max_iter, **opts):
        params = {k: v for k, v in {"preset": preset, "max_iter": max_iter}.items() if v}
        try:
            run = training.training_run_create(project=projects.project_get(project),
                                               params=params, enqueue=False)
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        def execute() -> None:
            try:
                training.training_run_execute(run_id=run.pk)
            finally:
                connection.close()  # this thread's own database connection

        worker = threading.Thread(target=execute)
        worker.start()
        bar = tqdm(total=run.params["max_iter"], unit="it", desc=f"training run {run.pk}",
                   disable=opts.get("verbosity", 1) == 0)
        while worker.is_alive():
            worker.join(timeout=1.0)
            run.refresh_from_db()
            done = int(run.progress.get("iteration", 0))
            bar.update(max(0, done - bar.n))
            if run.progress.get("losses"):
                bar.set_postfix(loss=f"{run.progress['losses'].get('total_loss', 0):.3f}")
        bar.close()
        run = TrainingRun.objects.select_related("model_version").get(pk=run.pk)
        if run.status != TrainingRun.Status.DONE:
            raise CommandError(f"training run {run.pk} {run.status}: {run.reason}")
        version = run.model_version
        self.stdout.write(f"model version {version.name}: {version.metrics or 'not evaluated'}"
                          f"{' (promoted)' if version.promoted else ''}")
