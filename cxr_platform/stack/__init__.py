"""The compose topology as local processes (``scripts/stack``, docs/stack.md).

Docker does not run everywhere the platform is developed, so ``docker/compose.yml`` would
go untested.  This package reads that file and runs each of its services as a local
process with the same argv and the same environment keys, values translated by one small
table (``translate``), so the stack cannot drift from compose unnoticed
(tests/stack/test_compose_parity.py).

Modules: ``compose`` (read + interpolate compose and the Dockerfiles), ``translate``
(container names -> this machine), ``plan`` (one process per service), ``processes``
(start, readiness, stop), ``databases`` (PostgreSQL databases, the Label Studio template),
``api`` (the ``Stack`` object), ``__main__`` (``up | down | status``).

No Django here: the stack starts Django processes, it never becomes one.
"""

from cxr_platform.stack.api import Stack, StackError

__all__ = ["Stack", "StackError"]
