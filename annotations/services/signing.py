"""Signed, expiring image URLs.

Label Studio and browsers fetch image files without a platform session, so a
file URL carries its own proof: an HMAC-SHA256 over (image id, variant, expiry)
under a key derived from the SECRET_KEY.  Wrong or expired signatures get 403.
With ``CXR_IMAGE_URLS=presigned`` (S3 stores) ``image_url`` hands out the store's
own presigned URLs instead, which expire the same way (S3 signs at most 7 days:
a longer lifetime, such as Label Studio's 30-day task URLs, keeps our route).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.urls import reverse

from annotations.errors import DomainError
from annotations.services import storage

VARIANTS = ("display", "thumbnail")


def _mac(image_id: str, variant: str, expires: int) -> str:
    key = hashlib.sha256(b"cxr-image-url\x00" + settings.SECRET_KEY.encode()).digest()
    msg = f"{image_id}\x00{variant}\x00{expires}".encode()
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def signed_image_path(image_id: str, variant: str, *, ttl: int | None = None,
                      now: float | None = None) -> str:
    if variant not in VARIANTS:
        raise DomainError("invalid_variant", f"unknown image variant {variant!r}")
    expires = int((now or time.time()) + (ttl or settings.SIGNED_URL_TTL_SECONDS))
    path = reverse("image-file", kwargs={"image_id": image_id, "variant": variant})
    return f"{path}?{urlencode({'exp': expires, 'sig': _mac(image_id, variant, expires)})}"


def signed_image_url(image_id: str, variant: str, **kw: object) -> str:
    return settings.PUBLIC_BASE_URL.rstrip("/") + signed_image_path(image_id, variant, **kw)


#: The longest lifetime an S3 presigned URL may have (SigV4).
PRESIGN_MAX_SECONDS = 7 * 24 * 3600


def image_url(image: Any, variant: str, *, ttl: int | None = None) -> str:
    """The URL a browser or Label Studio fetches an image file from, expiring after
    ``ttl`` (default ``SIGNED_URL_TTL``): the store's presigned URL when the
    installation says so and the lifetime allows, else our signed route."""
    if variant not in VARIANTS:
        raise DomainError("invalid_variant", f"unknown image variant {variant!r}")
    seconds = ttl or settings.SIGNED_URL_TTL_SECONDS
    if settings.IMAGE_URLS == "presigned" and seconds <= PRESIGN_MAX_SECONDS:
        key = image.display_path if variant == "display" else image.thumbnail_path
        return storage.presigned_url(storage.MEDIA, key, seconds)
    return signed_image_url(image.pseudo_id, variant, ttl=seconds)


def verify(image_id: str, variant: str, expires: str | None, sig: str | None,
           *, now: float | None = None) -> None:
    if variant not in VARIANTS or not expires or not sig:
        raise DomainError("forbidden", "missing or invalid signature")
    try:
        exp = int(expires)
    except ValueError as exc:
        raise DomainError("forbidden", "missing or invalid signature") from exc
    if not hmac.compare_digest(_mac(image_id, variant, exp), sig):
        raise DomainError("forbidden", "missing or invalid signature")
    if exp < (now or time.time()):
        raise DomainError("forbidden", "the link has expired")
