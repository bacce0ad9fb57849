"""The platform's one domain error type.

Every layer (pure packages, services, clients of external systems) raises
``DomainError`` for anything a caller could reasonably handle: bad input,
a missing object, a forbidden transition, an unreachable dependency.  The
API maps it to a JSON body ``{"error": {"code", "message", "detail"}}`` with
the HTTP status it carries, so views never translate errors themselves.

``Problems`` is the one error list of every parser (formats, parameter
schemas): located ``Problem`` items, a bound on how many are kept, and one
``DomainError`` for all of them.

This module imports nothing from Django: pure packages raise it too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
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


#: Problems kept per report: enough to fix a file in one pass, small enough for a
#: JSON response and an audit row.  ``Problems.total`` still counts all of them.
MAX_REPORTED_PROBLEMS = 200


@dataclass(frozen=True)
class Problem:
    """One located problem of some input: ``where`` says where, ``message`` what.

    ``where`` holds the location keys of the input's own vocabulary (``line``,
    ``file``, ``section``, ``index``, ``param``...) because a user fixes a file
    by them; ``as_dict`` is the public shape: ``{**where, "error": message}``.
    """

    message: str
    where: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {**self.where, "error": self.message}

    def __str__(self) -> str:
        place = ", ".join(f"{k} {v}" for k, v in self.where.items() if v is not None)
        return f"{place}: {self.message}" if place else self.message


class Problems:
    """The one error list every parser fills: collect all problems, then raise once.

    Parsers are all-or-nothing: a user should see every problem of a file at
    once, not fix them one upload at a time, and nothing half-parsed may be
    used.  Only the first ``limit`` problems are kept (``total`` counts all);
    ``error`` turns them into one ``DomainError`` whose message stays short
    and whose ``detail`` lists the kept problems as dicts.
    """

    def __init__(self, limit: int = MAX_REPORTED_PROBLEMS) -> None:
        self.limit = limit
        self.kept: list[Problem] = []
        self.total = 0

    def add(self, message: str, **where: Any) -> None:
        self.total += 1
        if len(self.kept) < self.limit:
            self.kept.append(Problem(message, where))

    def __bool__(self) -> bool:
        return self.total > 0

    def __len__(self) -> int:
        return self.total

    @property
    def items(self) -> list[dict[str, Any]]:
        """The kept problems in their public (``detail``) shape."""
        return [p.as_dict() for p in self.kept]

    def summary(self, limit: int = 3) -> str:
        """The first few problems on one line, for logs and short messages."""
        shown = "; ".join(str(p) for p in self.kept[:limit])
        more = self.total - min(limit, len(self.kept))
        return f"{shown} (and {more} more)" if more > 0 else shown

    def error(self, code: str, message: str, *, status: int | None = None) -> DomainError:
        """One ``DomainError`` for all of them (``detail``: the kept problems)."""
        return DomainError(code, message, status=status, detail=self.items)

    def raise_if_any(self, code: str, what: str) -> None:
        """Raise ``"{total} malformed {what}; nothing was imported"`` if anything was added."""
        if self.total:
            raise self.error(code, f"{self.total} malformed {what}; nothing was imported")
