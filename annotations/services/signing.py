"""Signed, expiring image URLs.

Label Studio and browsers fetch image files without a platform session, so a
file URL carries its own proof: an HMAC-SHA256 over (image id, variant, expiry)
under a key derived from the SECRET_KEY.  Wrong or expired signatures get 403.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import urlencode

from django.conf import settings
from django.urls import reverse

from annotations.errors import DomainError

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
