"""One lock across processes for sections that must not run twice at once (a push to
Label Studio, a reconcile pass being created): PostgreSQL advisory locks.

Row locks do not fit: the sections call Label Studio between their writes, and holding a
transaction open across HTTP would roll back rows whose Label Studio side already exists.
A session-level advisory lock holds across those calls and is released when the section
ends, or by PostgreSQL when the process dies.  Without PostgreSQL (the embedded SQLite
mode, one process) sections are already serial and the lock is a no-op.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

from django.db import connection


def _key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def exclusive(name: str) -> Iterator[None]:
    """Inside: no other process holds the lock ``name`` (it waits for it)."""
    if connection.vendor != "postgresql":
        yield
        return
    key = _key(name)
    if connection.in_atomic_block:
        # held to the end of the transaction, released by its commit or rollback (a
        # session lock would be released before the commit, or leak after an abort)
        with connection.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", [key])
        yield
        return
    with connection.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", [key])
    try:
        yield
    finally:
        try:
            with connection.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s)", [key])
        except Exception:  # the session is unusable: ending it releases the lock
            connection.close()
