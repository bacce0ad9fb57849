"""Sign-in tickets: ``<base64url(json payload)>.<hex hmac-sha256>``.

The payload is ``{"u": Label Studio user id, "p": project id, "exp": unix seconds,
"n": nonce}``.  The platform mints them (``annotations/label_studio/tickets.py`` implements
the same three lines of format; the integration tests prove the two agree) for a
radiologist it has authenticated; the bridge accepts each once, before ``exp``.
Standard library only: this file is loaded inside Label Studio.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any


class TicketError(ValueError):
    """The ticket is malformed, forged or expired."""


def ticket_verify(ticket: str, secret: str, *, now: float | None = None) -> dict[str, Any]:
    if not secret:
        raise TicketError("the bridge has no secret")
    body, _, mac = ticket.partition(".")
    want = hmac.new(secret.encode(), f"cxr-sso\x00{body}".encode(), hashlib.sha256).hexdigest()
    if not mac or not hmac.compare_digest(mac, want):
        raise TicketError("bad signature")
    try:
        payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except ValueError as exc:
        raise TicketError("bad payload") from exc
    if not isinstance(payload, dict) or not all(
            isinstance(payload.get(k), int) for k in ("u", "p", "exp")) \
            or not isinstance(payload.get("n"), str):
        raise TicketError("bad payload")
    if payload["exp"] < (time.time() if now is None else now):
        raise TicketError("expired")
    return payload
