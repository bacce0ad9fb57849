"""The one table that turns compose's container world into this machine's.

Compose values name things that exist only on the compose network or inside a container:
host names (``postgres``, ``platform``...), published ports (``localhost:8000``), container
paths (``/data``, ``/label-studio/bridge``) and the compose databases.  The stack runs the
same services as local processes, so every such value is rewritten here, by these rules and
no others (docs/stack.md lists them):

* URL ``scheme://[user@]host[:port]/...`` whose host is a compose service -> ``127.0.0.1``
  and that service's local port; ``localhost``/``127.0.0.1`` with a port some service
  publishes -> ``127.0.0.1`` and that service's local port.  ``postgres://`` URLs also get
  the local user (no password: trust auth) and the stack's database name; ``redis://`` URLs
  on the machine's shared Redis get the stack's database numbers.
* Host lists (``HOST_LIST_KEYS``): an item naming a compose service -> ``127.0.0.1``.
* Label Studio's database settings (``LS_DATABASE_KEYS``) are separate variables, so they
  are translated by key.
* A container path (a value, or an argv item, starting with ``/``) -> the local folder
  of the longest mount that covers it: a volume (``<stack>/volumes/<name>``), a bind mount
  (its host path) or what the image ``COPY``s there (the repository's file).
* argv: ``0.0.0.0`` -> ``127.0.0.1`` (a developer machine does not listen on every
  interface); ``0.0.0.0:<container port>`` and ``--port <container port>`` -> the local
  port; gunicorn with its bind in a config file gets ``--bind 127.0.0.1:<local port>``.

Anything else that looks like an address or a path and matches no rule raises
``Untranslatable``: a new host name or container path in compose must come with a rule.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK = "127.0.0.1"
#: Values that are comma-separated host names, not URLs.
HOST_LIST_KEYS = frozenset({"CXR_ALLOWED_HOSTS", "POSTGRE_HOST"})
#: Label Studio's PostgreSQL settings (label_studio/core/settings/base.py reads these).
LS_DATABASE_KEYS = frozenset({"POSTGRE_NAME", "POSTGRE_USER", "POSTGRE_PASSWORD",
                              "POSTGRE_PORT"})
_PORT_FLAGS = frozenset({"--port", "-p"})
_URL = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<netloc>[^/\s,?#]*)"
                  r"(?P<path>/[^\s,?#]*)?")


class Untranslatable(ValueError):
    """A compose value the table has no rule for (say which service, key and value)."""


@dataclass(frozen=True)
class Layout:
    """Where this stack's services live on this machine."""

    #: compose service name -> local port (every service a URL may name)
    ports: Mapping[str, int]
    #: compose database name -> this stack's database name
    databases: Mapping[str, str]
    #: published host port (compose ``ports:``) -> the service publishing it
    published: Mapping[int, str]
    #: shared Redis only: compose database number -> this stack's (None: own redis-server)
    redis_dbs: Mapping[str, str] | None = None
    pg_user: str = "postgres"


@dataclass
class Translator:
    """The rules above for one service (its mounts and its own port)."""

    layout: Layout
    #: container path -> local path, for this service's volumes, bind mounts and image COPYs
    mounts: Mapping[str, Path]
    service: str
    own_port: int | None = None
    container_port: int | None = None
    _sorted: list[tuple[str, Path]] = field(init=False)

    def __post_init__(self) -> None:
        self._sorted = sorted(self.mounts.items(), key=lambda kv: -len(kv[0]))

    def _fail(self, what: str) -> Untranslatable:
        return Untranslatable(f"service {self.service!r}: {what} (add a rule to "
                              "cxr_platform/stack/translate.py and docs/stack.md)")

    def path(self, value: str) -> str:
        for inside, local in self._sorted:
            if value == inside or value.startswith(inside.rstrip("/") + "/"):
                return str(local / value[len(inside):].lstrip("/"))
        raise self._fail(f"container path {value!r} is under no volume, bind mount or "
                         "image COPY")

    def _hostport(self, host: str, port: str | None) -> str:
        if host in self.layout.ports:
            return f"{LOOPBACK}:{self.layout.ports[host]}"
        if host in ("localhost", LOOPBACK) and port and int(port) in self.layout.published:
            return f"{LOOPBACK}:{self.layout.ports[self.layout.published[int(port)]]}"
        if host in ("localhost", LOOPBACK):
            return f"{host}:{port}" if port else host
        raise self._fail(f"host {host!r} is neither a compose service nor localhost")

    def url(self, match: re.Match[str]) -> str:
        scheme, netloc, path = match["scheme"], match["netloc"], match["path"] or ""
        userinfo, _, hostport = netloc.rpartition("@")
        host, _, port = hostport.partition(":")
        new_host = self._hostport(host, port or None)
        if scheme in ("postgres", "postgresql"):
            name = path.lstrip("/")
            if name not in self.layout.databases:
                raise self._fail(f"database {name!r} in {scheme}:// URL has no stack database")
            return f"{scheme}://{self.layout.pg_user}@{new_host}/{self.layout.databases[name]}"
        if scheme == "redis" and self.layout.redis_dbs is not None:
            number = path.lstrip("/") or "0"
            if number not in self.layout.redis_dbs:
                raise self._fail(f"Redis database {number} has no stack database number")
            path = f"/{self.layout.redis_dbs[number]}"
        user = f"{userinfo}@" if userinfo else ""
        return f"{scheme}://{user}{new_host}{path}"

    def env_value(self, key: str, value: str) -> str:
        if key in HOST_LIST_KEYS:
            return ",".join(LOOPBACK if item.strip() in self.layout.ports else item
                            for item in value.split(","))
        if key in LS_DATABASE_KEYS:
            return self._ls_database(key, value)
        value = _URL.sub(self.url, value)
        if value.startswith("/"):
            value = self.path(value)
        return value

    def _ls_database(self, key: str, value: str) -> str:
        if key == "POSTGRE_NAME":
            if value not in self.layout.databases:
                raise self._fail(f"POSTGRE_NAME {value!r} has no stack database")
            return self.layout.databases[value]
        if key == "POSTGRE_USER":
            return self.layout.pg_user
        if key == "POSTGRE_PORT":
            return str(self.layout.ports["postgres"])
        return ""  # POSTGRE_PASSWORD: trust authentication on this machine

    def argv(self, argv: list[str]) -> list[str]:
        out: list[str] = []
        for i, token in enumerate(argv):
            before = argv[i - 1] if i else ""
            if token == "0.0.0.0":  # noqa: S104 - the value being replaced
                token = LOOPBACK
            elif token.startswith("0.0.0.0:"):
                token = f"{LOOPBACK}:{self._own(token.split(':', 1)[1])}"
            elif before in _PORT_FLAGS and token.isdigit():
                token = str(self._own(token))
            elif token.startswith("/"):
                token = self.path(token)
            out.append(token)
        if Path(argv[0]).name == "gunicorn" and not any(
                t in ("--bind", "-b") or t.startswith("--bind=") for t in argv):
            if self.own_port is None:
                raise self._fail("gunicorn without a published port")
            out += ["--bind", f"{LOOPBACK}:{self.own_port}"]
        return out

    def _own(self, port: str) -> int:
        if self.own_port is None or int(port) != self.container_port:
            raise self._fail(f"argv port {port} is not this service's published "
                             f"container port ({self.container_port})")
        return self.own_port
