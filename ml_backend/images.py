"""Fetching and decoding the images Label Studio names in its tasks, bounded.

A task's image is the platform's signed URL (absolute, self-authorising) or a
Label Studio-hosted path (``/data/...``) on the configured Label Studio.  Every
input is bounded before it is expanded:

* where: only allowed origins (``ml_backend.origins``), redirects followed by
  hand, each hop re-checked, at most ``max_redirects``; the Label Studio token
  only on requests to Label Studio's origin;
* time: connect and read timeouts per socket operation, and a total deadline
  per image checked between reads (``read1`` returns whatever has arrived, so
  a server trickling bytes cannot stretch one read past the read timeout);
* bytes: ``Content-Length`` checked before the body is read, and the body
  read at most ``max_bytes`` (plus one, to tell "exactly" from "more");
* pixels: the width and height in the image header checked before decoding.

``ImageRefused`` is a policy refusal (an origin, a size): the request that
named it is refused as a whole.  ``ImageError`` is an image that is simply not
available (missing, unreadable, timed out): that task alone gets no result.
"""

from __future__ import annotations

import io
import time
import warnings
from dataclasses import dataclass

import numpy as np
import requests
import urllib3
from PIL import Image

from ml_backend.origins import OriginError, OriginPolicy, shown

_REDIRECTS = (301, 302, 303, 307, 308)
#: Decoders used (default deny): radiograph exports are PNG, JPEG or TIFF; never e.g.
#: EPS, whose PIL plugin runs Ghostscript.
FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "WEBP")
_CHUNK = 64 << 10


class ImageError(Exception):
    """One task's image is unavailable (missing, unreadable, too slow)."""


class ImageRefused(Exception):
    """One task's image breaks a limit or leaves the allowed origins."""


@dataclass(frozen=True)
class FetchLimits:
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    deadline: float = 30.0
    max_bytes: int = 64 << 20
    max_pixels: int = 40_000_000
    max_redirects: int = 3


@dataclass(frozen=True)
class ImageFetcher:
    """Fetch one task's image under the policy and limits; one instance per request."""

    policy: OriginPolicy
    limits: FetchLimits
    token: str | None = None

    def __call__(self, url: str) -> np.ndarray:
        return decode(self.fetch_bytes(url), self.limits.max_pixels)

    def fetch_bytes(self, url: str) -> bytes:
        deadline = time.monotonic() + self.limits.deadline
        try:
            target = self.policy.resolve(url)
        except OriginError as exc:
            raise ImageRefused(f"{shown(url)}: {exc}") from exc
        for _ in range(self.limits.max_redirects + 1):
            response = self._get(target, deadline)
            with response:
                if response.status_code not in _REDIRECTS:
                    return self._body(response, deadline)
                location = response.headers.get("Location", "")
            try:
                target = self.policy.resolve(location, base=target)
            except OriginError as exc:
                raise ImageRefused(f"redirect to {shown(location)} refused: {exc}") from exc
        raise ImageRefused(f"more than {self.limits.max_redirects} redirects")

    def _get(self, url: str, deadline: float) -> requests.Response:
        headers = {"Accept-Encoding": "identity"}
        if self.token and self.policy.gets_token(url):
            headers["Authorization"] = f"Token {self.token}"
        left = deadline - time.monotonic()
        if left <= 0:
            raise ImageError("image deadline passed")
        timeout = (min(self.limits.connect_timeout, left), min(self.limits.read_timeout, left))
        try:
            return requests.get(url, headers=headers, timeout=timeout, stream=True,
                                allow_redirects=False)
        except requests.RequestException as exc:
            raise ImageError(f"image request failed ({type(exc).__name__})") from exc

    def _body(self, response: requests.Response, deadline: float) -> bytes:
        if response.status_code != 200:
            raise ImageError(f"image request answered {response.status_code}")
        limit = self.limits.max_bytes
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise ImageRefused(f"image of {declared} bytes is larger than the limit of "
                               f"{limit} (CXR_ML_MAX_IMAGE_BYTES)")
        body = bytearray()
        try:
            while True:
                if time.monotonic() > deadline:
                    raise ImageError(f"image not complete within {self.limits.deadline} s")
                # decoding (should a server compress anyway) is bounded by the chunk size
                chunk = response.raw.read1(_CHUNK, decode_content=True)
                if not chunk:
                    return bytes(body)
                body += chunk
                if len(body) > limit:
                    raise ImageRefused(f"image is larger than the limit of {limit} bytes "
                                       "(CXR_ML_MAX_IMAGE_BYTES)")
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError,
                ValueError) as exc:
            raise ImageError(f"image download failed ({type(exc).__name__})") from exc


def decode(data: bytes, max_pixels: int) -> np.ndarray:
    """A grayscale array, after checking the header's width x height against ``max_pixels``.

    PIL reads only the header on ``open``; pixels are decoded by ``load``,
    which runs only for images within the limit, and only for ``FORMATS``.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
            width, height = image.size
            if width * height > max_pixels:
                raise ImageRefused(f"image of {width}x{height} pixels is larger than the "
                                   f"limit of {max_pixels} (CXR_ML_MAX_IMAGE_PIXELS)")
            image.load()
    except ImageRefused:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRefused(f"image refused by the decoder's pixel limit ({exc})") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError("not a decodable image") from exc
    return _grayscale(image)


def _grayscale(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L"):
        return np.asarray(image, dtype=np.uint16)
    if image.mode in ("I", "F"):
        arr = np.asarray(image)
        return np.clip(arr, 0, 65535).astype(np.uint16)
    return np.asarray(image.convert("L"), dtype=np.uint8)
