"""Which servers the ML backend may fetch images from, and which one gets the token.

The backend never follows a URL just because a request named it: a task's
image URL, and every redirect it leads to, must lie on an origin the
deployment configured (the platform's signed-URL origin, Label Studio's), and
Label Studio's token goes to Label Studio's origin only.  Origins are compared
as ``scheme://host:port`` strings (lower-case, default port made explicit) and
never resolved here, so a look-alike name cannot pass for a configured one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


class OriginError(ValueError):
    """A URL that is not on an allowed origin (or is not an http(s) URL at all)."""


def origin_of(url: str) -> str:
    """``scheme://host:port`` of an absolute http(s) URL; ``OriginError`` otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise OriginError("not a valid URL") from exc
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise OriginError("not an absolute http(s) URL")
    if parts.username is not None or parts.password is not None:
        raise OriginError("URLs with credentials are not fetched")
    host = parts.hostname.lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{scheme}://{host}:{port or _DEFAULT_PORTS[scheme]}"


def shown(url: str, limit: int = 120) -> str:
    """A URL as it may appear in an error message: no query (signatures), bounded."""
    head = url.split("?", 1)[0].split("#", 1)[0]
    return head if len(head) <= limit else head[:limit] + "..."


@dataclass(frozen=True)
class OriginPolicy:
    """The configured origins: Label Studio's (gets the token) and the image origins."""

    label_studio: str | None
    images: frozenset[str]

    @classmethod
    def from_urls(cls, label_studio_url: str | None, image_urls: Iterable[str]) -> OriginPolicy:
        ls = origin_of(label_studio_url) if label_studio_url else None
        allowed = {origin_of(u) for u in image_urls if u}
        return cls(label_studio=ls, images=frozenset(allowed | ({ls} if ls else set())))

    def resolve(self, url: str, base: str | None = None) -> str:
        """The absolute URL to fetch for a task's ``url`` (or a redirect's Location).

        A relative URL is Label Studio-hosted (``/data/...``) when it comes from a
        task, or relative to ``base`` when it comes from a redirect.
        """
        if base is not None:
            url = urljoin(base, url)
        elif not url.startswith(("http://", "https://")):
            if self.label_studio is None:
                raise OriginError("relative image URL and no Label Studio URL configured "
                                  "(CXR_ML_LABEL_STUDIO_URL)")
            url = urljoin(self.label_studio + "/", url.lstrip("/"))
        self.check(url)
        return url

    def check(self, url: str) -> None:
        origin = origin_of(url)
        if origin not in self.images:
            raise OriginError(f"origin {origin} is not an allowed image origin "
                              "(CXR_ML_IMAGE_ORIGINS, CXR_ML_LABEL_STUDIO_URL)")

    def gets_token(self, url: str) -> bool:
        """Only requests to Label Studio's own origin carry Label Studio's token."""
        return self.label_studio is not None and origin_of(url) == self.label_studio
