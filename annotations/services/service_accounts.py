"""Service identities: accounts for programs (the ML backend), not for people.

A service is a Django user in the group named after it (``ml-backend``), with
no staff flag and no usable password, so it can neither sign in nor pass any
role check; its one credential is a ``ServiceToken`` that
``ServiceTokenAuthentication`` accepts only on the endpoints that list the
service.  Why not an admin token: the ML backend is reachable by Label Studio
and holds its token on a GPU host; whoever takes it over should be able to ask
for a retrain, nothing else.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone

from annotations.errors import DomainError
from annotations.models import ServiceToken
from annotations.services.audit import audit_record

ML_BACKEND = "ml-backend"
#: The services the platform knows; each is a group of the same name.
SERVICES = (ML_BACKEND,)


def _username(service: str) -> str:
    return f"service.{service}"


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def service_of(user: Any) -> str | None:
    """The service a user acts for, or None for people (and anonymous requests)."""
    if not getattr(user, "is_authenticated", False):
        return None
    names = user.groups.filter(name__in=SERVICES).values_list("name", flat=True)
    return next(iter(names), None)


@transaction.atomic
def service_token_rotate(*, service: str, ttl_days: int | None = None,
                         actor: Any = None) -> str:
    """Create the service's account if needed and give it a new token; return the key.

    Every older token of the service is deleted: a rotation revokes at once.
    The key is returned once and stored only as its SHA-256.
    """
    if service not in SERVICES:
        raise DomainError("invalid", f"unknown service {service!r}; one of {SERVICES}")
    days = settings.SERVICE_TOKEN_TTL_DAYS if ttl_days is None else ttl_days
    if days < 1:
        raise DomainError("invalid", "a service token lives at least one day")
    group, _ = Group.objects.get_or_create(name=service)
    User = get_user_model()
    user, created = User.objects.get_or_create(username=_username(service))
    if not created and not user.groups.filter(pk=group.pk).exists():
        raise DomainError("conflict", f"user {user.username!r} exists and is not the "
                          f"{service} service account")
    # a service account never gains a person's powers, whatever was set by hand
    user.is_staff = user.is_superuser = False
    user.is_active = True
    user.set_unusable_password()
    user.save()
    user.user_permissions.clear()
    user.groups.set([group])
    ServiceToken.objects.filter(user=user).delete()
    key = secrets.token_urlsafe(32)
    ServiceToken.objects.create(user=user, key_hash=_hash(key),
                                expires_at=timezone.now() + timedelta(days=days))
    audit_record(action="service.token_rotate", actor=actor, target=user,
                 detail={"service": service, "ttl_days": days})
    return key


def service_token_user(key: str) -> Any | None:
    """The service account a key belongs to; None if no such token.

    Raises ``DomainError("token_expired")`` for an expired token, so the caller
    can say why rather than "unknown".
    """
    token = ServiceToken.objects.select_related("user").filter(key_hash=_hash(key)).first()
    if token is None or not token.user.is_active:
        return None
    if token.expires_at <= timezone.now():
        raise DomainError("token_expired", "service token expired; rotate it with "
                          "manage.py ml_backend_token", status=401)
    return token.user
