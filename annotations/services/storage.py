"""Local file storage with crash-safe writes.

Every file is written to a temporary name in the destination folder and then
renamed (atomic on POSIX), so a crash never leaves a half-written derivative
that a database row points to.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from django.conf import settings

from annotations.archives import ZipLimits, zip_open_checked
from annotations.errors import DomainError


def media_path(relative: str) -> Path:
    return Path(settings.MEDIA_ROOT) / relative


def read_display(image: Any) -> np.ndarray:
    """An image's 8-bit display derivative (what readers and the models see); a clear
    error when its file is gone."""
    display = cv2.imread(str(media_path(image.display_path)), cv2.IMREAD_GRAYSCALE)
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
    ``(relative path, sha256, area)``.  Identical masks share one file."""
    m = np.asarray(mask, bool)
    digest = mask_digest(m)
    relative = f"masks/{digest[:2]}/{digest}.png"
    path = media_path(relative)
    if not path.exists():
        ok, png = cv2.imencode(".png", m.astype(np.uint8) * 255, [cv2.IMWRITE_PNG_BILEVEL, 1])
        if not ok:  # pragma: no cover - OpenCV encodes any 2-D uint8 array
            raise DomainError("storage_error", "could not encode a mask")
        write_atomic(path, png.tobytes())
    return relative, digest, int(m.sum())


def mask_read(relative: str) -> np.ndarray:
    """A stored mask as a boolean array; a clear error when its file is gone."""
    data = cv2.imread(str(media_path(relative)), cv2.IMREAD_GRAYSCALE)
    if data is None:
        raise DomainError("unavailable", "a stored mask is missing")
    return data > 0


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic_chunks(path: Path, chunks: Iterable[bytes]) -> int:
    """Like ``write_atomic`` for data that arrives in pieces (uploads, zip members):
    never holds the whole file in memory.  Returns the number of bytes written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    written = 0
    try:
        with os.fdopen(fd, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
                written += len(chunk)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return written


def copy_atomic(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=".tmp-")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def move(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(src), str(dst))


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
