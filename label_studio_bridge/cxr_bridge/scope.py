"""Default-deny organization scope for every request that names an object.

Organizations alone do not keep members apart in Label Studio's community edition: some
endpoints resolve ids without checking the caller's organization (measured: a member of one
organization could create an annotation on another organization's task through
``POST /api/tasks/<id>/annotations/``).  So before any view runs, this middleware finds
every object the request names (numeric path segments, the ``project``/``task``/``view``
query parameters, top-level ``project``/``task`` of a JSON body), resolves each to its
organization and refuses the request (403) unless every one is the caller's active
organization.  A numeric segment of a kind it does not know is refused too: new Label
Studio endpoints stay closed until this table names them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse

#: Path segment before an id -> how to find that object's organization id.
_KINDS: dict[str, tuple[str, str, str]] = {
    "projects": ("projects", "Project", "organization_id"),
    "tasks": ("tasks", "Task", "project__organization_id"),
    "annotations": ("tasks", "Annotation", "task__project__organization_id"),
    "drafts": ("tasks", "AnnotationDraft", "task__project__organization_id"),
    "predictions": ("tasks", "Prediction", "task__project__organization_id"),
    "webhooks": ("webhooks", "Webhook", "organization_id"),
    "views": ("data_manager", "View", "project__organization_id"),
    "ml": ("ml", "MLBackend", "project__organization_id"),
    "organizations": ("organizations", "Organization", "pk"),
}
_QUERY_KINDS = {"project": "projects", "project_id": "projects", "task": "tasks",
                "task_id": "tasks", "view": "views", "view_id": "views"}
_MAX_INSPECTED_BODY = 1024 * 1024


class Refused(Exception):
    pass


def _org_of(kind: str, pk: int) -> int | None:
    from django.apps import apps

    app, model, field = _KINDS[kind]
    row = apps.get_model(app, model).objects.filter(pk=pk).values_list(field, flat=True)
    return next(iter(row), None)


def _caller(request: HttpRequest) -> Any:
    """The user the request acts as: session or JWT (set by middleware), or a legacy token
    (which Label Studio only resolves later, inside the view)."""
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return user
    header = request.headers.get("Authorization", "")
    if header.startswith("Token "):
        from rest_framework.authtoken.models import Token

        token = Token.objects.filter(key=header[6:].strip()).select_related("user").first()
        if token is not None and token.user.is_active:
            return token.user
    return None


def _named_objects(request: HttpRequest) -> list[tuple[str, int]]:
    found: list[tuple[str, int]] = []
    segments = [s for s in request.path.split("/") if s]
    for i, seg in enumerate(segments):
        if seg.isdigit():
            kind = segments[i - 1] if i else ""
            if kind not in _KINDS and kind != "users":
                raise Refused(f"objects of kind {kind!r} are not reachable")
            found.append((kind, int(seg)))
    for key, kind in _QUERY_KINDS.items():
        for value in request.GET.getlist(key):
            if value.strip():
                if not value.strip().isdigit():
                    raise Refused(f"{key} must be an id")
                found.append((kind, int(value)))
    if request.content_type == "application/json" and request.body and \
            len(request.body) <= _MAX_INSPECTED_BODY:
        try:
            body = json.loads(request.body)
        except ValueError:
            body = None
        if isinstance(body, dict):
            for key in ("project", "task"):
                value = body.get(key)
                if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
                    found.append((_QUERY_KINDS[key], int(value)))
    return found


def _check(user: Any, objects: list[tuple[str, int]]) -> None:
    from organizations.models import OrganizationMember

    active = user.active_organization_id
    if active is None or not OrganizationMember.objects.filter(
            user=user, organization_id=active, deleted_at__isnull=True).exists():
        raise Refused("no active organization")
    for kind, pk in objects:
        if kind == "users":
            if not OrganizationMember.objects.filter(user_id=pk, organization_id=active,
                                                     deleted_at__isnull=True).exists():
                raise Refused("that user is not in your organization")
            continue
        org = _org_of(kind, pk)
        if org is not None and org != active:
            raise Refused(f"{kind} {pk} belongs to another organization")


class OrganizationScopeMiddleware:
    """See the module docstring.  Runs after authentication and before every view."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(self, request: HttpRequest, view_func: Any, view_args: Any,
                     view_kwargs: Any) -> HttpResponse | None:
        if request.path.startswith(("/cxr-bridge/", "/static/", "/react-app/",
                                    "/label-studio-frontend/", "/health")):
            return None
        user = _caller(request)
        if user is None:
            return None  # Label Studio itself answers 401 or the login page
        try:
            _check(user, _named_objects(request))
        except Refused as exc:
            return JsonResponse({"detail": f"refused: {exc}"}, status=403)
        return None
