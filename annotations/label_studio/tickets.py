"""Sign-in tickets for Label Studio, minted by the platform for an authenticated reader.

Format (the bridge inside Label Studio, ``label_studio_bridge/cxr_bridge/tickets.py``,
verifies the same format; it cannot import the platform, so the format lives in both, and
the integration tests sign readers in through a real Label Studio to prove they agree):
``<base64url(json {"u": user id, "p": project id, "exp": unix s, "n": nonce})>.<hex mac>``,
the MAC being HMAC-SHA256 under the bridge secret of ``"cxr-sso\\0" + body``.

A ticket names one Label Studio user and one project, expires within a minute and is
accepted once, so a leaked link (browser history, proxy log) opens nothing later.

Pure module: standard library only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time


def ticket_mint(*, user_id: int, project_id: int, secret: str, ttl: int,
                now: float | None = None) -> str:
    payload = {"u": int(user_id), "p": int(project_id),
               "exp": int((time.time() if now is None else now) + ttl),
               "n": secrets.token_urlsafe(12)}
    body = base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()
                                    ).decode().rstrip("=")
    mac = hmac.new(secret.encode(), f"cxr-sso\x00{body}".encode(), hashlib.sha256).hexdigest()
    return f"{body}.{mac}"


def sign_in_url(base_url: str, ticket: str) -> str:
    """The Label Studio address that redeems ``ticket`` and opens the workspace."""
    return f"{base_url.rstrip('/')}/cxr-bridge/sso/?t={ticket}"
