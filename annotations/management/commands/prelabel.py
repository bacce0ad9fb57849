"""``python manage.py prelabel --project SLUG [--model-version V]`` with a progress bar."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from annotations.errors import DomainError
from annotations.services import projects
from annotations.services.prelabeling import prelabel_run_create, prelabel_run_execute


class Command(BaseCommand):
    help = "Pre-label a project's images with a model version (default: the promoted one)."

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True)
        parser.add_argument("--model-version")
        parser.add_argument("--batch-size", type=int)

    def handle(self, *args, project, model_version, batch_size, **opts):
        try:
            run = prelabel_run_create(project=projects.project_get(project),
                                      model_version=model_version, enqueue=False)
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        bar = tqdm(unit="image", desc=f"prelabel {run.model_version}",
                   disable=opts.get("verbosity", 1) == 0)

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        run = prelabel_run_execute(run_id=run.pk, progress=progress, batch_size=batch_size)
        bar.close()
        if run.status != "done":
            raise CommandError(f"pre-labelling failed: {run.reason}")
        self.stdout.write(f"{run.done} images pre-labelled with {run.model_version}; "
                          f"{run.pushed} pushed to readers' workspaces")
