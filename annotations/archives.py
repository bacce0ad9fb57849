"""Zip archives are checked before a single member is expanded.

A zip is a promise about sizes: its central directory declares each member's
compressed and uncompressed size, and Python's ``zipfile`` never yields more
bytes for a member than it declares (a member whose data disagrees fails its
CRC check).  So reading the directory alone is enough to refuse a zip bomb
(a few KB that expand to GiBs, or overlapping members that each claim the
same compressed bytes) before anything is decompressed: too many members,
too many bytes in one member or in all of them, or a compression ratio no
real radiograph or annotation file reaches.

Pure: no Django.  Callers pass limits built from settings (``CXR_ZIP_*``).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass

from annotations.errors import DomainError

MIB = 1024 * 1024

#: Members smaller than this are not held to the ratio limit: tiny text files
#: (an empty VOC annotation) compress far better than anything dangerous can
#: grow from, and the total-size limit still bounds many of them together.
RATIO_FLOOR_BYTES = 1 * MIB


@dataclass(frozen=True)
class ZipLimits:
    """What one archive may hold; the defaults equal the settings' defaults."""

    max_members: int = 10_000
    max_total_bytes: int = 4 * 1024 * MIB
    max_member_bytes: int = 256 * MIB
    max_ratio: float = 100.0


def _too_large(code: str, message: str) -> DomainError:
    return DomainError(code, message, status=413)


def zip_check(zf: zipfile.ZipFile, limits: ZipLimits) -> list[zipfile.ZipInfo]:
    """The archive's file members, once its directory is within ``limits``.

    Raises ``DomainError`` (HTTP 413) naming the limit that was exceeded; the
    message gives the limit, never a member name (names may carry identity).
    """
    members = [info for info in zf.infolist() if not info.is_dir()]
    if len(members) > limits.max_members:
        raise _too_large("zip_too_many_members",
                         f"the zip holds {len(members)} files; at most "
                         f"{limits.max_members} are accepted")
    total = 0
    for info in members:
        if info.file_size > limits.max_member_bytes:
            raise _too_large("zip_member_too_large",
                             f"a file in the zip expands to more than "
                             f"{limits.max_member_bytes // MIB} MiB")
        if info.file_size >= RATIO_FLOOR_BYTES and (
                info.file_size > limits.max_ratio * max(info.compress_size, 1)):
            raise _too_large("zip_ratio_exceeded",
                             f"a file in the zip is compressed more than "
                             f"{limits.max_ratio:g}:1 (a zip bomb?)")
        total += info.file_size
        if total > limits.max_total_bytes:
            raise _too_large("zip_too_large",
                             f"the zip expands to more than "
                             f"{limits.max_total_bytes // MIB} MiB")
    return members


def zip_open_checked(path_or_file, limits: ZipLimits) -> tuple[zipfile.ZipFile,
                                                              list[zipfile.ZipInfo]]:
    """Open a zip and check it; the caller closes the returned archive.

    A damaged archive is refused as ``invalid_zip`` rather than surfacing
    ``zipfile.BadZipFile`` deep inside a caller.
    """
    try:
        zf = zipfile.ZipFile(path_or_file)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise DomainError("invalid_zip", "the zip archive is damaged") from exc
    try:
        return zf, zip_check(zf, limits)
    except BaseException:
        zf.close()
        raise
