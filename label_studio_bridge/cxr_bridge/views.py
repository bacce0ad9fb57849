"""The bridge's two endpoints (see the package docstring)."""

from __future__ import annotations

import hmac
import json
import re
import secrets
import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from cxr_bridge.tickets import TicketError, ticket_verify

#: Workspace keys are the platform's own identifiers (``<project>:<reader>:<kind>``).
_KEY = re.compile(r"^[A-Za-z0-9:._-]{1,100}$")
_MAX_BODY = 4096


def _refuse(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def _authorized(request: HttpRequest) -> bool:
    secret = settings.CXR_BRIDGE_SECRET
    given = request.headers.get("X-CXR-Bridge-Secret", "")
    return bool(secret) and hmac.compare_digest(given.encode(), secret.encode())


@csrf_exempt
@require_POST
def workspace_provision(request: HttpRequest) -> HttpResponse:
    """Create (or return) the organization, service user and reader user of one workspace.

    Idempotent by ``key``: a platform that failed half-way asks again and gets the same
    organization and a valid token.
    """
    if not _authorized(request):
        return _refuse(403, "bridge secret required")
    if len(request.body) > _MAX_BODY:
        return _refuse(413, "body too large")
    try:
        body = json.loads(request.body)
    except ValueError:
        return _refuse(400, "the body is not JSON")
    key = body.get("key") if isinstance(body, dict) else None
    if not isinstance(key, str) or not _KEY.match(key):
        return _refuse(400, "key must be 1-100 characters of [A-Za-z0-9:._-]")
    return JsonResponse(_provision(key))


def _provision(key: str) -> dict:
    from organizations.models import Organization
    from rest_framework.authtoken.models import Token

    User = get_user_model()
    tag = re.sub(r"[^a-z0-9]", "-", key.lower())
    with transaction.atomic():
        # the title guard keeps "cxr:" titles to the organizations the bridge made
        org = Organization.objects.filter(title=f"cxr:{key}",
                                          created_by__email__startswith="svc-").first()
        if org is None:
            service = User.objects.create_user(
                email=f"svc-{tag}-{secrets.token_hex(4)}@cxr-bridge.invalid")
            service.set_unusable_password()
            service.save()
            org = Organization.create_organization(created_by=service, title=f"cxr:{key}",
                                                   legacy_api_tokens_enabled=True)
            service.active_organization = org
            service.save(update_fields=["active_organization"])
            reader = User.objects.create_user(
                email=f"reader-{tag}-{secrets.token_hex(4)}@cxr-bridge.invalid")
            reader.set_unusable_password()
            reader.save()
            org.add_user(reader)
            reader.active_organization = org
            reader.save(update_fields=["active_organization"])
        service = org.created_by
        reader = org.users.exclude(pk=service.pk).order_by("pk").first()
        token, _ = Token.objects.get_or_create(user=service)
    return {"organization": org.pk, "service_user": service.pk, "service_token": token.key,
            "reader_user": reader.pk}


@require_GET
def sso_login(request: HttpRequest) -> HttpResponse:
    """Sign the ticket's reader user in and send them to their workspace's data page."""
    from organizations.models import OrganizationMember
    from projects.models import Project

    try:
        claim = ticket_verify(request.GET.get("t", ""), settings.CXR_BRIDGE_SECRET)
    except TicketError as exc:
        return _refuse(403, f"sign-in refused: {exc}")
    if not cache.add(f"cxr-bridge-ticket:{claim['n']}", 1,
                     timeout=settings.CXR_BRIDGE_TICKET_TTL + 60):
        return _refuse(403, "sign-in refused: ticket already used")
    user = get_user_model().objects.filter(pk=claim["u"], is_active=True).first()
    project = Project.objects.filter(pk=claim["p"]).first()
    if user is None or project is None or not OrganizationMember.objects.filter(
            user=user, organization_id=project.organization_id,
            deleted_at__isnull=True).exists():
        return _refuse(403, "sign-in refused: not a member of that workspace")
    # Label Studio's own login (it also stamps the session for its session-age policy)
    from users.functions.common import login

    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    # signing in as another user flushes the session, stamp included: stamp it again
    request.session["last_login"] = time.time()
    return HttpResponseRedirect(f"/projects/{project.pk}/data")
