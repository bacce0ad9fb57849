"""Every file the platform keeps, through Django's storage API.

Five stores (``settings.STORAGES``): ``default`` (de-identified images, display and
thumbnail derivatives, masks), ``staging`` (uploads waiting for their ingest task),
``quarantine`` (raw originals an admin may look at, then purged), ``models`` (model
versions and training checkpoints).  Locally each is a folder under ``CXR_DATA_DIR``
(``annotations.storage_backends.LocalStorage``: atomic writes); with ``CXR_STORAGE=s3``
each is a prefix of an S3 bucket (django-storages).  Code names a file by its store and
key, never by a path: a worker on another host reaches the same files through the same
store, and keeps what it reads in a bounded local cache (``annotations.storage_cache``).

Keys never change meaning: a derivative folder carries a random suffix, a mask is named
by its digest, a model version by a name the registry never reuses.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from django.conf import settings
from django.core.files.base import ContentFile, File
from django.core.files.storage import FileSystemStorage, Storage, storages

from annotations import storage_cache
from annotations.archives import ZipLimits, zip_open_checked
from annotations.errors import DomainError

MEDIA, STAGING, QUARANTINE, MODELS = "default", "staging", "quarantine", "models"
#: Written last when a folder is published to a remote store: a reader that lists the
#: folder before it (mid-upload) sees no folder, never a part of one.
PUBLISHED = ".published"
#: Objects larger than this are spooled to disk, never held whole, while uploading.
SPOOL_BYTES = 8 * 1024 * 1024


def store(alias: str) -> Storage:
    return storages[alias]


def is_remote(alias: str) -> bool:
    """Whether ``alias`` lives off this machine (reads go through the cache)."""
    return not isinstance(store(alias), FileSystemStorage)


def media_path(relative: str) -> Path:
    """The local file of a media key (local store only: remote keys have no path)."""
    return Path(store(MEDIA).path(relative))


def put(alias: str, key: str, data: bytes) -> None:
    """Write ``data`` under ``key`` (atomic locally; one PUT remotely)."""
    store(alias).save(key, ContentFile(data))


def put_chunks(alias: str, key: str, chunks: Iterable[bytes]) -> int:
    """Write data that arrives in pieces (uploads, zip members) without holding it whole;
    returns the bytes written."""
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
        written = 0
        for chunk in chunks:
            spool.write(chunk)
            written += len(chunk)
        spool.seek(0)
        store(alias).save(key, File(spool, name=key))
    return written


def put_file(alias: str, key: str, path: Path) -> None:
    with open(path, "rb") as fh:
        store(alias).save(key, File(fh, name=key))


def exists(alias: str, key: str) -> bool:
    return bool(key) and store(alias).exists(key)


def delete(alias: str, key: str) -> None:
    """Remove ``key`` (and its cached copy); a key that is gone already is fine."""
    with contextlib.suppress(FileNotFoundError):
        store(alias).delete(key)
    if is_remote(alias):
        storage_cache.forget(alias, key)


def modified(alias: str, key: str) -> datetime:
    return store(alias).get_modified_time(key)


def keys(alias: str, prefix: str = "") -> list[str]:
    """Every key under ``prefix`` (recursive), sorted."""
    st, out, pending = store(alias), [], [prefix.strip("/")]
    while pending:
        folder = pending.pop()
        try:
            dirs, files = st.listdir(folder)
        except FileNotFoundError:
            continue
        base = f"{folder}/" if folder else ""
        out += [base + f for f in files if not f.startswith(".tmp-")]
        pending += [base + d for d in dirs if not d.startswith(".")]
    return sorted(out)


def stored_key(alias: str, value: str) -> str | None:
    """A row's file reference as a key of ``alias``, or None when it names nothing the
    store holds.  Rows written before the stores held absolute local paths: such a path
    maps to its key when it lies inside the store's folder, and any other path (or a
    key that climbs with ``..``) maps to None, so it is never read or deleted."""
    if not value:
        return None
    if not os.path.isabs(value):
        parts = value.split("/")
        return None if any(p in ("", "..") for p in parts) else value
    if is_remote(alias):
        return None
    root = Path(store(alias).path("")).resolve()
    try:
        path = Path(value).resolve()
    except OSError:
        return None
    return path.relative_to(root).as_posix() if path.is_relative_to(root) and path != root \
        else None


def move(src_alias: str, src_key: str, dst_alias: str, dst_key: str) -> None:
    """Copy an object to another store (or key) piece by piece, then delete the source:
    a crash in between leaves both copies, never neither."""
    with open_read(src_alias, src_key) as src:
        put_chunks(dst_alias, dst_key, iter(lambda: src.read(CHUNK_BYTES), b""))
    delete(src_alias, src_key)


def read_bytes(alias: str, key: str) -> bytes:
    try:
        with store(alias).open(key, "rb") as fh:
            return fh.read()
    except (FileNotFoundError, OSError) as exc:
        raise DomainError("unavailable", "a stored file is missing") from exc


def open_read(alias: str, key: str) -> Any:
    """A stored file opened for reading (the caller closes it); a clear error when gone."""
    if not exists(alias, key):
        raise DomainError("unavailable", "a stored file is missing")
    return store(alias).open(key, "rb")


def _copy_to(alias: str, key: str):
    def fetch(fh) -> None:
        try:
            with store(alias).open(key, "rb") as src:
                shutil.copyfileobj(src, fh, CHUNK_BYTES)
        except (FileNotFoundError, OSError) as exc:
            raise DomainError("unavailable", "a stored file is missing") from exc
    return fetch


def local_path(alias: str, key: str) -> Path:
    """A local file holding ``alias:key``: the store's own file locally, the cached
    copy of a remote object (fetched once, then reused until evicted)."""
    if not key:
        raise DomainError("unavailable", "a stored file is missing")
    if not is_remote(alias):
        return Path(store(alias).path(key))
    if not exists(alias, key):
        raise DomainError("unavailable", "a stored file is missing")
    return storage_cache.cached_file(alias, key, _copy_to(alias, key))


def media_tree(media_keys: Iterable[str], dest: Path) -> Path:
    """A local folder in which every media key is a file at its key's path (what a
    training reads by file name): the media folder itself locally; for a remote store,
    ``dest`` filled with links to the cached copies, so an eviction during the run
    cannot pull a file from under it."""
    if not is_remote(MEDIA):
        return Path(store(MEDIA).path(""))
    for key in media_keys:
        target = dest / storage_cache.entry_path(MEDIA, key).relative_to(
            storage_cache.root() / MEDIA)
        target.parent.mkdir(parents=True, exist_ok=True)
        source = local_path(MEDIA, key)
        try:
            os.link(source, target)
        except OSError:  # another file system: a copy
            shutil.copyfile(source, target)
    return dest


@contextlib.contextmanager
def private_copy(alias: str, key: str) -> Iterator[Path]:
    """A local file of ``alias:key`` for the duration of the block and never cached
    (raw originals carry identity): a 0600 temporary copy for a remote store."""
    if not is_remote(alias):
        yield Path(store(alias).path(key))
        return
    scratch = storage_cache.scratch("originals")
    storage_cache.sweep_scratch(scratch, older_than=3600)  # a killed task's copy
    fd, tmp = tempfile.mkstemp(dir=scratch)
    try:
        with os.fdopen(fd, "wb") as fh:
            _copy_to(alias, key)(fh)
        yield Path(tmp)
    finally:
        Path(tmp).unlink(missing_ok=True)


def scratch_dir(name: str) -> Path:
    """A private working folder on this machine: under the staging folder locally, under
    the cache's scratch space when the stores are remote (the data dir holds nothing
    else)."""
    if is_remote(STAGING):
        return storage_cache.scratch(name)
    path = Path(settings.STAGING_ROOT) / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def presigned_url(alias: str, key: str, ttl: int) -> str:
    """The store's own expiring URL for ``key`` (remote stores only)."""
    if not is_remote(alias):
        raise DomainError("invalid", "presigned URLs need an S3 store")
    return store(alias).url(key, expire=ttl)


def training_dir(prefix: str) -> Path:
    """A run's private work folder on this machine, beside the cache it links films
    from (same file system: links, not copies); work folders a killed run left behind
    for a week are removed first."""
    root = scratch_dir("training")
    storage_cache.sweep_scratch(root, older_than=7 * 24 * 3600)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=root))


# --- folders of files: model versions and checkpoints ---------------------------


def folder_local(alias: str, prefix: str) -> Path:
    """A local folder holding every object under ``prefix``; for a remote store, fetched
    whole into the cache the first time."""
    if not is_remote(alias):
        return Path(store(alias).path(prefix))

    def fill(tmp: Path) -> None:
        found = keys(alias, prefix)
        if f"{prefix.strip('/')}/{PUBLISHED}" not in found:  # absent, or still uploading
            raise DomainError("not_found", f"nothing is stored under {prefix!r}")
        for key in found:
            dest = tmp / key[len(prefix.strip("/")) + 1:]
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open(dest, "wb") as fh:
                _copy_to(alias, key)(fh)
    return storage_cache.cached_folder(alias, prefix, fill)


def folder_for_write(alias: str, prefix: str) -> Path:
    """Where to write a folder that ``folder_publish`` then stores under ``prefix``: the
    store's own folder locally, a scratch folder for a remote store."""
    if not is_remote(alias):
        path = Path(store(alias).path(prefix))
        path.mkdir(parents=True, exist_ok=True)
        return path
    parent = storage_cache.entry_path(alias, prefix).parent
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=parent, prefix=".tmp-"))


def folder_publish(alias: str, prefix: str, folder: Path) -> None:
    """Store every file of ``folder`` under ``prefix`` (remote: upload, then keep the
    folder as the cached copy; local: it is already in place)."""
    if not is_remote(alias):
        return
    base = prefix.strip("/")
    delete(alias, f"{base}/{PUBLISHED}")  # republished: unreadable until complete again
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if not path.name.startswith("."):
            put_file(alias, f"{base}/{path.relative_to(folder).as_posix()}", path)
    put(alias, f"{base}/{PUBLISHED}", b"")
    storage_cache.folder_adopt(folder, storage_cache.entry_path(alias, prefix))


def folder_delete(alias: str, prefix: str) -> None:
    if not prefix.strip("/"):
        raise DomainError("invalid", "refusing to delete a whole store")
    if not is_remote(alias):
        shutil.rmtree(store(alias).path(prefix), ignore_errors=True)
        return
    delete(alias, f"{prefix.strip('/')}/{PUBLISHED}")  # first: nobody fetches a part
    for key in keys(alias, prefix):
        delete(alias, key)
    storage_cache.forget(alias, prefix)


def model_dir(name: str) -> Path:
    """The local folder of a stored model version (or checkpoint)."""
    return folder_local(MODELS, name)


# --- images and masks -------------------------------------------------------------


def read_display(image: Any) -> np.ndarray:
    """An image's 8-bit display derivative (what readers and the models see); a clear
    error when its file is gone."""
    display = cv2.imread(str(local_path(MEDIA, image.display_path)), cv2.IMREAD_GRAYSCALE)
    if display is None:
        raise DomainError("unavailable", f"display image of {image.pseudo_id} is missing")
    return display


def mask_digest(mask: np.ndarray) -> str:
    """Content digest of a boolean mask (its shape and its bits)."""
    m = np.asarray(mask, bool)
    h = hashlib.sha256(f"{m.shape[0]}x{m.shape[1]}:".encode())
    h.update(np.packbits(m).tobytes())
    return h.hexdigest()


def mask_write(mask: np.ndarray) -> tuple[str, str, int]:
    """Store a boolean mask losslessly (1-bit PNG) under its digest; returns
    ``(key, sha256, area)``.  Identical masks share one object."""
    m = np.asarray(mask, bool)
    digest = mask_digest(m)
    relative = f"masks/{digest[:2]}/{digest}.png"
    if not exists(MEDIA, relative):
        ok, png = cv2.imencode(".png", m.astype(np.uint8) * 255, [cv2.IMWRITE_PNG_BILEVEL, 1])
        if not ok:  # pragma: no cover - OpenCV encodes any 2-D uint8 array
            raise DomainError("storage_error", "could not encode a mask")
        put(MEDIA, relative, png.tobytes())
    return relative, digest, int(m.sum())


def mask_read(relative: str) -> np.ndarray:
    """A stored mask as a boolean array; a clear error when its object is gone."""
    try:
        path = local_path(MEDIA, relative)
    except DomainError as exc:
        raise DomainError("unavailable", "a stored mask is missing") from exc
    data = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if data is None:
        raise DomainError("unavailable", "a stored mask is missing")
    return data > 0


def dicom_bytes(dataset: Any) -> bytes:
    """A pydicom dataset as a DICOM file (Part 10) in memory."""
    out = io.BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    return out.getvalue()


def zip_limits(*, max_total_bytes: int | None = None) -> ZipLimits:
    """The configured limits every zip is held to (``CXR_ZIP_*``); a caller that
    keeps the expanded members in memory passes a lower ``max_total_bytes``."""
    total = settings.ZIP_MAX_TOTAL_BYTES
    return ZipLimits(
        max_members=settings.ZIP_MAX_MEMBERS,
        max_total_bytes=min(total, max_total_bytes) if max_total_bytes else total,
        max_member_bytes=settings.ZIP_MAX_MEMBER_BYTES,
        max_ratio=settings.ZIP_MAX_RATIO,
    )


#: Zip members are copied out in pieces of this size.
CHUNK_BYTES = 1024 * 1024


def zip_member_chunks(zf: zipfile.ZipFile, member: str) -> Iterator[bytes]:
    """A member's bytes, piece by piece; a member whose data does not match its
    directory entry (CRC, truncation) is refused as ``invalid_zip``."""
    try:
        with zf.open(member) as src:
            while chunk := src.read(CHUNK_BYTES):
                yield chunk
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise DomainError("invalid_zip", "a file in the zip archive is damaged") from exc


def iter_input_files(path: Path) -> Iterator[tuple[str, Path | zipfile.ZipFile, str]]:
    """Yield ``(name, container, member)`` for a file, a folder (recursive) or a zip.

    For plain files ``container`` is the path and ``member`` is empty; for zip
    members ``container`` is the open archive.  Hidden files are skipped.  A
    zip is checked against ``zip_limits()`` before its first member is yielded
    (``DomainError``, 413, if it exceeds them).
    """
    path = Path(path)
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts):
                yield from iter_input_files(p)
        return
    if zipfile.is_zipfile(path) and path.suffix.lower() == ".zip":
        zf, members = zip_open_checked(path, zip_limits())
        with zf:
            for info in sorted(members, key=lambda i: i.filename):
                name = Path(info.filename).name
                if name and not name.startswith("."):
                    yield name, zf, info.filename
        return
    yield path.name, path, ""
