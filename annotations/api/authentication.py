"""API token authentication whose tokens expire (``CXR_TOKEN_TTL_HOURS``).

DRF's ``TokenAuthentication`` accepts a token forever: a token copied into a
script or leaked in a log would stay valid until someone deletes it.  This
subclass refuses a token older than the configured lifetime with a 401 that
says so; signing in again at ``/api/auth/token/`` issues a new one.
"""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication

from annotations.services import accounts


class ExpiringTokenAuthentication(TokenAuthentication):
    def authenticate_credentials(self, key: str) -> tuple[Any, Any]:
        user, token = super().authenticate_credentials(key)
        if accounts.token_expired(token):
            raise exceptions.AuthenticationFailed(
                "token expired; request a new one at /api/auth/token/")
        return user, token
