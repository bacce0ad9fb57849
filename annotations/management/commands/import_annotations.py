"""``python manage.py import_annotations FILE --project SLUG [--format vinbigdata]``"""

from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from annotations.errors import DomainError
from annotations.services import imports, projects


class Command(BaseCommand):
    help = "Import readers' annotations (all or nothing) and run consensus."

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument("--project", required=True)
        parser.add_argument("--format", default="vinbigdata", dest="fmt")
        parser.add_argument("--no-consensus", action="store_true")

    def handle(self, *args, file, project, fmt, no_consensus, **opts):
        try:
            summary = imports.annotations_import(
                project=projects.project_get(project), fmt=fmt,
                text=file.read_text(encoding="utf-8-sig"), run_consensus=not no_consensus)
        except DomainError as exc:
            details = "".join(f"\n  line {d.get('line')}: {d.get('error')}"
                              if isinstance(d, dict) else f"\n  {d}"
                              for d in (exc.detail or [])[:20])
            raise CommandError(f"{exc.code}: {exc.message}{details}") from exc
        self.stdout.write(json.dumps(summary))
