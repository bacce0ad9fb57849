"""Fetching the images Label Studio names in its tasks.

A task's image is either the platform's signed URL (absolute, self-authorising)
or a Label Studio-hosted path (``/data/...``), fetched from the ``hostname`` that
``/setup`` gave with the legacy token it gave.  A missing or unreadable image is
an ``ImageError`` for that task alone.
"""

from __future__ import annotations

from urllib.parse import urljoin

import cv2
import numpy as np
import requests


class ImageError(Exception):
    """One task's image could not be fetched or decoded."""


def decode(data: bytes) -> np.ndarray:
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if arr is None:
        raise ImageError("not a decodable image")
    return arr


def fetch(url: str, *, hostname: str | None, token: str | None, timeout: float) -> np.ndarray:
    headers = {}
    if not url.startswith(("http://", "https://")):
        if not hostname:
            raise ImageError("relative image URL and no Label Studio hostname from /setup")
        url = urljoin(hostname.rstrip("/") + "/", url.lstrip("/"))
        if token:
            headers["Authorization"] = f"Token {token}"
    try:
        response = requests.get(url, headers=headers, timeout=timeout)
    except requests.RequestException as exc:
        raise ImageError(f"image request failed ({type(exc).__name__})") from exc
    if response.status_code != 200:
        raise ImageError(f"image request answered {response.status_code}")
    return decode(response.content)
