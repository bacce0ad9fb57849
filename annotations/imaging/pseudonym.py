"""Keyed pseudonyms: stable, non-reversible identifiers derived from DICOM UIDs.

An HMAC-SHA256 under a secret key (``CXR_PSEUDONYM_KEY``) maps the same source
identifier to the same pseudonym on every import, so re-importing a study
finds its earlier rows, while nobody without the key can link a pseudonym back
to a hospital identifier (a plain hash of a UID could be brute-forced from
the UID's predictable structure).
"""

from __future__ import annotations

import hashlib
import hmac


def digest(key: bytes | str, namespace: str, value: str) -> bytes:
    if isinstance(key, str):
        key = key.encode()
    return hmac.new(key, f"{namespace}\x00{value}".encode(), hashlib.sha256).digest()


def pseudo_id(key: bytes | str, namespace: str, value: str, *, prefix: str = "") -> str:
    """Short readable pseudonym, e.g. ``IMG-3f9c...`` (20 hex digits, 80 bits)."""
    return prefix + digest(key, namespace, value).hex()[:20]


def image_pseudo_id(key: bytes | str, project_key: str, instance_pseudo: str) -> str:
    """The platform-wide id of one image in one project (``IMG-...``).

    ``instance_pseudo`` names the source image (its SOP Instance UID or its
    pixels) and is the same in every project the file is ingested into; the
    image's id must not be, because image files, the image API and the viewer
    look images up by id alone.  Keying it by the project as well keeps every
    id unique and re-ingest into the same project stable.
    """
    return pseudo_id(key, "image", f"{project_key}\x00{instance_pseudo}", prefix="IMG-")


def pseudo_uid(key: bytes | str, value: str) -> str:
    """A valid DICOM UID (``2.25.<128-bit integer>``) replacing ``value``."""
    return "2.25." + str(int.from_bytes(digest(key, "uid", value)[:16], "big"))


def day_shift(key: bytes | str, patient: str, max_days: int = 3650) -> int:
    """Days (negative, never zero) to shift every date of one patient by.

    One offset per patient keeps intervals between that patient's studies.
    """
    return -(int.from_bytes(digest(key, "dateshift", patient)[:4], "big") % max_days + 1)
