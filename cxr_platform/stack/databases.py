"""The stack's PostgreSQL databases on this machine's server, and Label Studio's template.

Migrating a fresh Label Studio database takes 30-50 s.  It is done once per Label Studio
version and bridge code (``ls_template_name``) into a template database that is marked
complete only after the migration succeeded; each stack's database is then a
``CREATE DATABASE ... TEMPLATE`` copy (about a second).  A file lock serialises concurrent
builders (parallel test sessions).

Only databases this module created are dropped: the stack's own (by the caller, who named
them) and an incomplete template of ours (``cxr_ls_template_*`` without the mark).
"""

from __future__ import annotations

import fcntl
import hashlib
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import psycopg2
from psycopg2 import sql

TEMPLATE_PREFIX = "cxr_ls_template_"
_COMPLETE = "cxr-stack template: migrated"
_MIGRATE = ("from label_studio.server import _setup_env, _apply_database_migrations as m; "
            "_setup_env(); m()")


class DatabaseError(RuntimeError):
    """A database the stack needs could not be made."""


@contextmanager
def admin(host: str, port: int, user: str) -> Iterator[psycopg2.extensions.cursor]:
    """An autocommit cursor on the server's ``postgres`` database (CREATE/DROP DATABASE)."""
    conn = psycopg2.connect(host=host, port=port, user=user, dbname="postgres",
                            connect_timeout=5)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


def exists(cur: psycopg2.extensions.cursor, name: str) -> bool:
    cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
    return cur.fetchone() is not None


def create(cur: psycopg2.extensions.cursor, name: str, template: str | None = None) -> bool:
    """Create ``name`` unless it exists; True when created."""
    if exists(cur, name):
        return False
    query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template:
        query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    cur.execute(query)
    return True


def drop(cur: psycopg2.extensions.cursor, name: str) -> None:
    cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
        sql.Identifier(name)))


def terminate_backends(cur: psycopg2.extensions.cursor, names: Iterable[str]) -> int:
    """End every session on these databases (what a PostgreSQL restart does to them)."""
    cur.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = ANY(%s) AND pid <> pg_backend_pid()", (list(names),))
    return int(cur.fetchone()[0])


def allow_connections(cur: psycopg2.extensions.cursor, names: Iterable[str],
                      allowed: bool) -> None:
    for name in names:
        cur.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
            sql.Identifier(name), sql.Literal(allowed)))


def ls_template_name(version: str, bridge: Path) -> str:
    """Keyed by Label Studio's version and the bridge's code (its app may migrate too)."""
    digest = hashlib.sha256(version.encode())
    for path in sorted(bridge.rglob("*.py")):
        digest.update(path.relative_to(bridge).as_posix().encode())
        digest.update(path.read_bytes())
    return TEMPLATE_PREFIX + digest.hexdigest()[:12]


def _is_complete(cur: psycopg2.extensions.cursor, name: str) -> bool:
    cur.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                "WHERE datname = %s", (name,))
    row = cur.fetchone()
    return row is not None and row[0] == _COMPLETE


def ls_template_ensure(*, name: str, python: Path, env: Mapping[str, str], lock_dir: Path,
                       pg: tuple[str, int, str], log: Path) -> bool:
    """Build the migrated template ``name`` unless it is there; True when built now.

    ``env`` is Label Studio's process environment from the plan (the same settings, bridge
    included), its database pointed at the template here.
    """
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with admin(*pg) as cur:
            if _is_complete(cur, name):
                return False
            drop(cur, name)  # ours and incomplete (an interrupted build)
            create(cur, name)
        with tempfile.TemporaryDirectory(prefix="cxr-ls-template-") as data_dir:
            child = {**env, "POSTGRE_NAME": name, "LABEL_STUDIO_BASE_DATA_DIR": data_dir}
            with open(log, "ab") as out:
                code = subprocess.run([str(python), "-c", _MIGRATE], env=child,  # noqa: S603
                                      cwd=data_dir, stdout=out, stderr=subprocess.STDOUT,
                                      timeout=600, check=False).returncode
        if code != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
            raise DatabaseError(f"migrating the Label Studio template failed ({code}); "
                                f"{log}:\n{tail}")
        with admin(*pg) as cur:
            cur.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                sql.Identifier(name), sql.Literal(_COMPLETE)))
        return True
