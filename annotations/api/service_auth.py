"""Service tokens on the API: default deny, one endpoint at a time.

``Authorization: Service <key>`` authenticates a service account (see
``annotations.services.service_accounts``).  The check that matters happens
here, at authentication, not in each view's permissions: a view that only asks
for ``IsAuthenticated`` would otherwise let a service in.  So a service is
refused with 403 on every view unless that view names it in
``allowed_services``; the view then admits it with ``IsAllowedService``.
"""

from __future__ import annotations

import logging
from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.permissions import BasePermission

from annotations.errors import DomainError
from annotations.services.service_accounts import service_of, service_token_user

logger = logging.getLogger(__name__)
KEYWORD = "Service"


def _allowed(view: Any) -> tuple[str, ...]:
    return tuple(getattr(view, "allowed_services", ()))


class ServiceTokenAuthentication(BaseAuthentication):
    def authenticate(self, request) -> tuple[Any, None] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != KEYWORD.lower().encode():
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed("invalid service token header")
        try:
            key = parts[1].decode()
            user = service_token_user(key)
        except UnicodeError as exc:
            raise exceptions.AuthenticationFailed("invalid service token header") from exc
        except DomainError as exc:
            raise exceptions.AuthenticationFailed(exc.message) from exc
        if user is None:
            raise exceptions.AuthenticationFailed("invalid service token")
        service = service_of(user)
        view = (request.parser_context or {}).get("view")
        if service is None or service not in _allowed(view):
            logger.warning("service %s refused on %s %s", service, request.method,
                           request.path)
            raise exceptions.PermissionDenied(
                f"the {service or 'unknown'} service may not call this endpoint")
        return user, None

    def authenticate_header(self, request) -> str:
        return KEYWORD


class IsAllowedService(BasePermission):
    """Admits a service account on a view whose ``allowed_services`` names its service."""

    message = "services only on their own endpoints"

    def has_permission(self, request, view) -> bool:
        service = service_of(request.user)
        return service is not None and service in _allowed(view)


class ServiceTokenScheme(OpenApiAuthenticationExtension):
    """Documents the scheme in the OpenAPI schema (drf-spectacular finds it by class)."""

    target_class = ServiceTokenAuthentication
    name = "serviceTokenAuth"

    def get_security_requirement(self, auto_schema) -> dict[str, list] | None:
        """Listed only on the views a service may call."""
        return {self.name: []} if _allowed(auto_schema.view) else None

    def get_security_definition(self, auto_schema) -> dict[str, str]:
        return {"type": "apiKey", "in": "header", "name": "Authorization",
                "description": f'A service token with the prefix "{KEYWORD}", accepted only '
                               "on the endpoints that name the service (the ML backend: "
                               "POST /api/ml/training-requests/ and "
                               "GET /api/ml/projects/{ls_project_id}/model/); 403 "
                               "everywhere else."}
