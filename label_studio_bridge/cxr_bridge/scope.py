"""Default deny for everything a workspace's reader can send to Label Studio.

Organizations alone do not keep members apart in Label Studio's community edition: its
object permission checks pass across organizations (``projects/mixins.py``: "LSO always
runs a single organization"), several views resolve ids without the caller's organization,
and the data manager takes its project from the request body.  So, before any view runs:

1. **Who is calling** is resolved exactly as Label Studio will resolve it: a token in the
   ``Authorization`` header wins (any case, any whitespace, as DRF parses it); a header the
   bridge cannot resolve is refused; otherwise the session or JWT user.
2. **Reader users** (members who do not own the organization) may use only the routes the
   labeling screen needs (``READER_ROUTES``); everything else, settings, webhooks, ML
   backends, storages, exports, invites, tokens, organization and user edits, is refused.
   Their request bodies must be JSON (or empty) and small.
3. **Every object the request names** (numeric path segments, the ``project``/``task``/
   ``view`` query parameters, and ``project``/``task``/``view``/``annotation``/
   ``parent_annotation``/``parent_prediction`` in a JSON body, with ids parsed as leniently
   as Django parses them) must belong to the caller's active organization; a body naming
   another annotator as ``completed_by`` is refused.  A numeric path segment of a kind this
   table does not know is refused too, so an upgrade of Label Studio fails closed.

Refusals say only "refused"; the reason goes to Label Studio's log.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse

logger = logging.getLogger("cxr_bridge.scope")

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
_BODY_KINDS = {"project": "projects", "task": "tasks", "view": "views",
               "annotation": "annotations", "parent_annotation": "annotations",
               "parent_prediction": "predictions"}
_MAX_READER_BODY = 1024 * 1024
_READ = frozenset({"GET", "HEAD", "OPTIONS"})
_EDIT = _READ | {"PATCH", "PUT", "DELETE"}

#: What the labeling screen needs, and nothing else (method set, full-path pattern).
READER_ROUTES: list[tuple[frozenset[str], re.Pattern[str]]] = [
    (_READ, re.compile(p)) for p in (
        r"/", r"/projects/?", r"/projects/\d+/?", r"/projects/\d+/data/?", r"/heidi-tips/?",
        r"/sw\.js", r"/favicon\.ico", r"/user/login/?",
        r"/api/version/?", r"/api/current-user/whoami/?", r"/api/users/?",
        r"/api/projects/?", r"/api/projects/\d+/?",
        r"/api/projects/\d+/(next|label-stream-history)/?",
        r"/api/dm/(columns|project)/?", r"/api/tasks/?", r"/api/tasks/\d+/?",
        r"/api/predictions/?", r"/api/label_links/?", r"/api/ml/?",
    )
] + [
    (_READ | {"POST"}, re.compile(r"/user/logout/?")),
    (_READ | {"POST"}, re.compile(r"/api/dm/views/?")),
    (_EDIT, re.compile(r"/api/dm/views/\d+/?")),
    (_READ | {"POST"}, re.compile(r"/api/tasks/\d+/(annotations|drafts)/?")),
    (_EDIT, re.compile(r"/api/(annotations|drafts)/\d+/?")),
]
_OPEN_PREFIXES = ("/cxr-bridge/", "/static/", "/react-app/", "/label-studio-frontend/")


class Refused(Exception):
    def __init__(self, reason: str, status: int = 403) -> None:
        super().__init__(reason)
        self.status = status


def _org_of(kind: str, pk: int) -> int | None:
    from django.apps import apps

    app, model, field = _KINDS[kind]
    row = apps.get_model(app, model).objects.filter(pk=pk).values_list(field, flat=True)
    return next(iter(row), None)


def _caller(request: HttpRequest) -> Any:
    """The user Label Studio will act as (DRF tries the token before the session)."""
    from rest_framework.authentication import get_authorization_header

    parts = get_authorization_header(request).split()
    if parts:
        keyword = parts[0].lower()
        if keyword == b"token":
            if len(parts) != 2:
                raise Refused("malformed token header", 401)
            from rest_framework.authtoken.models import Token

            token = Token.objects.filter(key=parts[1].decode(errors="replace")).select_related(
                "user").first()
            if token is None or not token.user.is_active:
                raise Refused("unknown token", 401)
            return token.user
        if keyword != b"bearer":
            raise Refused("unknown authorization scheme", 401)
        # Bearer (JWT): Label Studio's middleware has set request.user, or nobody
    user = getattr(request, "user", None)
    return user if user is not None and user.is_authenticated else None


def _as_id(value: Any) -> int:
    """An id the way Django's lookups read it (``45``, ``" 45"``, ``45.0``); else refused."""
    if isinstance(value, bool):
        raise Refused("bad id")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError as exc:
                raise Refused("bad id") from exc
            if number.is_integer():
                return int(number)
    raise Refused("bad id")


def _body(request: HttpRequest, is_reader: bool) -> dict[str, Any] | None:
    if not request.body:
        return None
    if is_reader and len(request.body) > _MAX_READER_BODY:
        raise Refused("body too large", 413)
    if not (request.content_type or "").endswith("json"):
        if is_reader:
            raise Refused("only JSON bodies")
        return None
    try:
        body = json.loads(request.body)
    except ValueError as exc:
        if is_reader:
            raise Refused("body is not JSON") from exc
        return None
    return body if isinstance(body, dict) else None


def _named_objects(request: HttpRequest, body: dict[str, Any] | None) -> list[tuple[str, int]]:
    found: list[tuple[str, int]] = []
    segments = [s for s in request.path.split("/") if s]
    for i, seg in enumerate(segments):
        if seg.strip().isdigit():
            kind = segments[i - 1] if i else ""
            if kind not in _KINDS and kind != "users":
                raise Refused(f"objects of kind {kind!r} are not reachable")
            found.append((kind, int(seg)))
    for key, kind in _QUERY_KINDS.items():
        for value in request.GET.getlist(key):
            if value.strip():
                found.append((kind, _as_id(value)))
    for key, kind in _BODY_KINDS.items():
        if body is not None and body.get(key) is not None:
            found.append((kind, _as_id(body[key])))
    return found


def _check(user: Any, objects: list[tuple[str, int]], body: dict[str, Any] | None) -> None:
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
    who = None if body is None else body.get("completed_by")
    if isinstance(who, dict):
        who = who.get("id")
    if who is not None and _as_id(who) != user.pk:
        raise Refused("completed_by names another user")


def _is_reader(user: Any) -> bool:
    """A member who does not own their active organization: a workspace's reader."""
    from organizations.models import Organization

    return not Organization.objects.filter(pk=user.active_organization_id,
                                           created_by_id=user.pk).exists()


def _reader_route_allowed(method: str, path: str) -> bool:
    return any(method in methods and pattern.fullmatch(path)
               for methods, pattern in READER_ROUTES)


class OrganizationScopeMiddleware:
    """See the module docstring.  Runs after authentication and before every view."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(self, request: HttpRequest, view_func: Any, view_args: Any,
                     view_kwargs: Any) -> HttpResponse | None:
        if request.path.startswith(_OPEN_PREFIXES) or request.path in ("/health",
                                                                       "/health/"):
            return None
        try:
            user = _caller(request)
            if user is None:
                return None  # anonymous: Label Studio answers 401 or its login page
            reader = _is_reader(user)
            if reader and not _reader_route_allowed(request.method or "", request.path):
                raise Refused(f"route {request.method} {request.path} is not for readers")
            body = _body(request, reader)
            _check(user, _named_objects(request, body), body)
        except Refused as exc:
            logger.warning("cxr-bridge refused %s %s: %s", request.method, request.path, exc)
            return JsonResponse({"detail": "refused"}, status=exc.status)
        return None
