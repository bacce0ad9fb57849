"""``python manage.py ml_backend_token [--days N]``: create or rotate the ML backend's
service account and print its new token (the only line on stdout), e.g.

    CXR_ML_PLATFORM_TOKEN=$(python manage.py ml_backend_token)

The token is accepted only on ``POST /api/ml/training-requests/``; every older
token of the service stops working at once.  Never give the backend an admin's token.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from annotations.errors import DomainError
from annotations.services.service_accounts import ML_BACKEND, service_token_rotate


class Command(BaseCommand):
    help = "Create or rotate the ML backend's service token and print it."

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, default=None,
                            help="lifetime in days (default: CXR_SERVICE_TOKEN_TTL_DAYS)")

    def handle(self, *args, days, **opts):
        try:
            key = service_token_rotate(service=ML_BACKEND, ttl_days=days)
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        self.stderr.write(f"new {ML_BACKEND} token (older ones revoked); set it as "
                          "CXR_ML_PLATFORM_TOKEN on the ML backend:")
        self.stdout.write(key)
