"""Accounts: one password policy, throttled sign-in, expiring API tokens.

Every way a password is set or checked goes through here, so the rules are
the same on every path:

* ``password_validate`` applies ``AUTH_PASSWORD_VALIDATORS`` (the API's and the
  web app's reader forms, the demo loader; Django's admin and its
  ``createsuperuser`` / ``changepassword`` commands apply the same list);
* ``sign_in`` (the web login page and ``/api/auth/token/``) refuses a client
  that failed too often: ``LOGIN_MAX_FAILURES`` per username and client
  address, ``LOGIN_MAX_FAILURES_PER_IP`` per address over all usernames (a
  password spray), each within ``LOGIN_WINDOW_SECONDS``.  The counters live in
  Django's cache; keys are hashes, so usernames never reach the cache;
* ``token_issue`` hands out an API token that ``ExpiringTokenAuthentication``
  accepts for ``TOKEN_TTL_HOURS`` after it was created; an expired one is
  replaced on the next sign-in.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import authenticate, get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from rest_framework.authtoken.models import Token

from annotations.errors import DomainError

logger = logging.getLogger(__name__)


# --- password policy ---------------------------------------------------------------


def password_validate(password: str, *, username: str = "", email: str = "") -> None:
    """Refuse a password the platform's validators reject (``weak_password``).

    The user's own name and address are checked against too (a password that
    resembles them is refused), so pass them for an account not saved yet.
    """
    candidate = get_user_model()(username=username, email=email)
    try:
        validate_password(password, user=candidate)
    except ValidationError as exc:
        raise DomainError("weak_password", " ".join(exc.messages),
                          detail=list(exc.messages)) from exc


# --- throttled sign-in -------------------------------------------------------------


def client_address(meta: Mapping[str, Any]) -> str:
    """The client's address: ``REMOTE_ADDR``, or the header a trusted proxy sets
    (``CXR_CLIENT_IP_HEADER``, e.g. ``HTTP_X_REAL_IP``; only where the proxy
    overwrites it, or clients could pick their own address)."""
    header = settings.CLIENT_IP_HEADER
    value = str(meta.get(header) or "") if header else ""
    return value.split(",")[0].strip() or str(meta.get("REMOTE_ADDR") or "unknown")


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:32]


def _keys(username: str, ip: str) -> tuple[str, str]:
    return (f"login-fail:user:{_digest(username.strip().lower(), ip)}",
            f"login-fail:ip:{_digest(ip)}")


def _minutes(seconds: int) -> int:
    return max(1, -(-seconds // 60))


def login_throttle_check(*, username: str, ip: str) -> None:
    """Raise ``throttled`` (429) while this username+address, or this address,
    has used up its failed attempts for the current window."""
    user_key, ip_key = _keys(username, ip)
    counts = cache.get_many([user_key, ip_key])
    if (counts.get(user_key, 0) >= settings.LOGIN_MAX_FAILURES
            or counts.get(ip_key, 0) >= settings.LOGIN_MAX_FAILURES_PER_IP):
        logger.warning("sign-in refused: too many failures (key %s)", user_key[-8:])
        window = settings.LOGIN_WINDOW_SECONDS
        raise DomainError("throttled", "too many failed sign-ins; try again in "
                          f"{_minutes(window)} minutes", status=429,
                          detail={"retry_after_seconds": window})


def login_failure_record(*, username: str, ip: str) -> None:
    """Count one failed attempt; a window starts with its first failure."""
    for key in _keys(username, ip):
        cache.add(key, 0, timeout=settings.LOGIN_WINDOW_SECONDS)
        try:
            cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.set(key, 1, timeout=settings.LOGIN_WINDOW_SECONDS)


def sign_in(*, username: str, password: str, ip: str, request: Any = None) -> Any:
    """The user these credentials name, or ``DomainError``.

    Throttled first (a locked-out client learns nothing about the password),
    then checked; a success clears this username+address's failures (the
    per-address count keeps running, so one valid account cannot reset a spray).
    """
    login_throttle_check(username=username, ip=ip)
    user = authenticate(request, username=username, password=password)
    if user is None:
        login_failure_record(username=username, ip=ip)
        raise DomainError("invalid_credentials", "wrong username or password")
    cache.delete(_keys(username, ip)[0])
    return user


# --- expiring API tokens -----------------------------------------------------------


def token_expires_at(token: Token) -> datetime:
    return token.created + timedelta(hours=settings.TOKEN_TTL_HOURS)


def token_expired(token: Token) -> bool:
    return timezone.now() >= token_expires_at(token)


@transaction.atomic
def token_issue(user: Any) -> tuple[Token, datetime]:
    """The user's API token and when it expires; an expired token is replaced.

    One token per user (DRF's model); the row is locked so that two sign-ins
    racing past expiry do not both replace it.
    """
    token = Token.objects.select_for_update().filter(user=user).first()
    if token is not None and token_expired(token):
        token.delete()
        token = None
    if token is None:
        token = Token.objects.create(user=user)
    return token, token_expires_at(token)
