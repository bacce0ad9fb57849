"""A worker's bounded local copy of what it fetched from a remote store.

Stored objects never change under a key (derivative folders carry a random suffix,
masks are named by their digest, model versions by a name the registry never reuses),
so a cached copy is valid for as long as it exists: no revalidation round trip.  The
cache holds at most ``STORAGE_CACHE_MAX_BYTES``; past that, the least recently used
entries go first (a hit refreshes an entry's time).  A folder cached as one unit (a
model version: its ``.complete`` marker) is evicted whole, never file by file.

Written with the standard library: the cache is a folder of files with their
modification times as the recency record, which no maintained package offers in a form
that survives a worker restart and is shared by a host's worker processes.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import IO

from django.conf import settings

from annotations.errors import DomainError

#: Marks a folder fetched completely (and evicted as a whole).
COMPLETE = ".complete"
#: Scratch space (private temporary copies, training work) is never counted or evicted.
SCRATCH = "scratch"
#: Entries used this recently are never evicted (a batch being read right now).
MIN_AGE_SECONDS = 30.0

_added_since_sweep = 0
logger = logging.getLogger(__name__)


def root() -> Path:
    return Path(settings.STORAGE_CACHE_ROOT)


def _safe(key: str) -> PurePosixPath:
    """A store key as a relative path that cannot climb out of the cache."""
    rel = PurePosixPath(key)
    if rel.is_absolute() or not rel.parts or any(p in ("..", "") for p in rel.parts):
        raise DomainError("invalid", "a stored key is not a relative path")
    return rel


def entry_path(alias: str, key: str) -> Path:
    return root() / alias / _safe(key)


def scratch(name: str) -> Path:
    _private_root()
    path = root() / SCRATCH / _safe(name)
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def _private_root() -> None:
    base = root()
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o700)


def sweep_scratch(folder: Path, older_than: float) -> int:
    """Remove what a killed task left in a scratch folder (files and folders older
    than ``older_than`` seconds); how many went."""
    cutoff = time.time() - older_than
    gone = 0
    for path in list(folder.iterdir()) if folder.is_dir() else []:
        try:
            if path.stat().st_mtime < cutoff:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
                gone += 1
        except FileNotFoundError:  # another process swept it first
            continue
    return gone


def cached_file(alias: str, key: str, fetch: Callable[[IO[bytes]], None]) -> Path:
    """The local copy of ``alias:key``, fetched into place (atomically) when absent."""
    dest = entry_path(alias, key)
    if dest.is_file():
        _touch(dest)
        return dest
    _private_root()
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fetch(fh)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _added(dest.stat().st_size)
    return dest


def cached_folder(alias: str, prefix: str, fill: Callable[[Path], None]) -> Path:
    """The local copy of every object under ``alias:prefix/``; ``fill(tmp)`` writes them
    into a temporary folder that replaces the entry only once complete."""
    dest = entry_path(alias, prefix)
    if (dest / COMPLETE).is_file():
        _touch(dest / COMPLETE)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".tmp-"))
    try:
        fill(tmp)
        (tmp / COMPLETE).write_text("")
        folder_adopt(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _added(_size(dest))
    return dest


def folder_adopt(folder: Path, dest: Path) -> None:
    """Make ``folder`` (complete, on the cache's file system) the entry at ``dest``."""
    (folder / COMPLETE).touch()
    if dest.exists():
        old = dest.with_name(f".old-{dest.name}-{os.getpid()}-{time.monotonic_ns()}")
        os.replace(dest, old)
        shutil.rmtree(old, ignore_errors=True)
    os.replace(folder, dest)


def forget(alias: str, key: str) -> None:
    path = entry_path(alias, key)
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _touch(path: Path) -> None:
    try:
        os.utime(path)
    except OSError:  # evicted by another worker process meanwhile: the caller has it open
        pass


def _size(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        try:
            total += p.stat().st_size if p.is_file() else 0
        except FileNotFoundError:  # evicted by another process meanwhile
            continue
    return total


def _added(size: int) -> None:
    """Sweep once a twentieth of the budget has arrived since the last sweep (and on a
    worker's first fetch): a walk of the cache per fetch would cost more than the fetch."""
    global _added_since_sweep
    first = _added_since_sweep == 0
    _added_since_sweep += max(size, 1)
    if first or _added_since_sweep >= settings.STORAGE_CACHE_MAX_BYTES // 20:
        _added_since_sweep = 1
        try:
            sweep()
        except OSError as exc:  # the fetch succeeded; an eviction may wait for the next
            logger.warning("cache sweep failed (%s)", type(exc).__name__)


def entries() -> list[tuple[float, int, Path]]:
    """Every evictable entry as ``(last use, bytes, path)``: files, and complete folders
    as one entry (their marker's time)."""
    out: list[tuple[float, int, Path]] = []
    base = root()
    if not base.is_dir():
        return out
    for dirpath, dirnames, filenames in os.walk(base):
        here = Path(dirpath)
        if here == base:
            dirnames[:] = [d for d in dirnames if d != SCRATCH]
        if COMPLETE in filenames:
            try:
                out.append(((here / COMPLETE).stat().st_mtime, _size(here), here))
            except FileNotFoundError:  # evicted by another process meanwhile
                pass
            dirnames[:] = []
            continue
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith("."):
                continue
            try:
                st = (here / name).stat()
            except FileNotFoundError:
                continue
            out.append((st.st_mtime, st.st_size, here / name))
    return out


def sweep(max_bytes: int | None = None) -> int:
    """Evict least recently used entries until the cache holds at most ``max_bytes``
    (default: the setting); returns the bytes freed.  Best effort: two processes may
    sweep at once, and what the other removed first is simply gone."""
    limit = settings.STORAGE_CACHE_MAX_BYTES if max_bytes is None else max_bytes
    items = sorted(entries())
    total = sum(size for _, size, _ in items)
    freed = 0
    young = time.time() - MIN_AGE_SECONDS
    for used, size, path in items:
        if total - freed <= limit:
            break
        if used > young:
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        freed += size
    return freed
