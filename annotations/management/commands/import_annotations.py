"""``python manage.py import_annotations FILE --project SLUG [--format NAME]``

Without ``--format`` the format follows from the file (name and header), never a default.
"""

from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from annotations.errors import DomainError
from annotations.formats import registry
from annotations.services import imports, projects


class Command(BaseCommand):
    help = "Import readers' annotations (all or nothing) and run consensus."

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument("--project", required=True)
        parser.add_argument("--format", default=None, dest="fmt",
                            help="coco, vinbigdata, nih, voc, yolo (default: from the file)")
        parser.add_argument("--no-consensus", action="store_true")

    def handle(self, *args, file, project, fmt, no_consensus, **opts):
        try:
            text = file.read_text(encoding="utf-8-sig")
            fmt = fmt or registry.format_guess(file.name, text)
            summary = imports.annotations_import(
                project=projects.project_get(project), fmt=fmt, text=text,
                run_consensus=not no_consensus)
        except DomainError as exc:
            details = "".join(f"\n  line {d.get('line')}: {d.get('error')}"
                              if isinstance(d, dict) else f"\n  {d}"
                              for d in (exc.detail or [])[:20])
            raise CommandError(f"{exc.code}: {exc.message}{details}"[:2000]) from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"cannot read {file}: {type(exc).__name__}") from exc
        self.stdout.write(json.dumps(summary))
