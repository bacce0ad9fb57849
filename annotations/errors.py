"""The platform's one domain error type.

Every layer (pure packages, services, clients of external systems) raises
``DomainError`` for anything a caller could reasonably handle: bad input,
a missing object, a forbidden transition, an unreachable dependency.  The
API maps it to a JSON body ``{"error": {"code", "message", "detail"}}`` with
the HTTP status it carries, so views never translate errors themselves.

This module imports nothing from Django: pure packages raise it too.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """A failure the caller can act on; ``code`` is stable and machine-readable."""

    #: Default HTTP status per code family, used when none is given.
    _STATUS_BY_CODE = {
        "not_found": 404,
        "forbidden": 403,
        "conflict": 409,
        "unavailable": 503,
    }

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int | None = None,
        detail: Any = None,
        transient: bool = False,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or self._STATUS_BY_CODE.get(code, 400)
        self.detail = detail
        #: True when retrying later may succeed (network, lock, broker).
        self.transient = transient

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.detail is not None:
            body["detail"] = self.detail
        return body

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"DomainError({self.code!r}, {self.message!r})"
