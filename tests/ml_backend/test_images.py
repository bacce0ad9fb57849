"""The pure parts of the image path: origin comparison and bounded decoding."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ml_backend.images import ImageError, ImageRefused, decode
from ml_backend.origins import OriginError, OriginPolicy, origin_of
from tests.ml_backend.listeners import png_header

POLICY = OriginPolicy.from_urls("http://ls.internal:8080", ["https://platform.example.org"])


@pytest.mark.parametrize("url,origin", [
    ("http://LS.internal:8080/data/x", "http://ls.internal:8080"),
    ("https://platform.example.org/files/x?sig=1", "https://platform.example.org:443"),
    ("http://[::1]/x", "http://[::1]:80"),
])
def test_origins_are_normalised(url, origin):
    assert origin_of(url) == origin


@pytest.mark.parametrize("url", [
    "http://ls.internal:8080@evil.example/x",   # userinfo that looks like the host
    "http://ls.internal.evil.example:8080/x",   # a look-alike name
    "http://ls.internal:8081/x",                # another port
    "https://ls.internal:8080/x",               # another scheme
    "file:///etc/passwd", "gopher://ls.internal:8080/x", "http:///x",
])
def test_look_alike_and_non_http_urls_are_refused(url):
    with pytest.raises(OriginError):
        POLICY.resolve(url)


def test_relative_paths_stay_on_label_studio_and_only_it_gets_the_token():
    assert POLICY.resolve("/data/upload/1/x.png") == "http://ls.internal:8080/data/upload/1/x.png"
    assert POLICY.resolve("//evil.example/x.png").startswith("http://ls.internal:8080/")
    assert POLICY.gets_token("http://ls.internal:8080/data/x")
    assert not POLICY.gets_token("https://platform.example.org/files/x")


def test_redirect_locations_resolve_against_the_hop_and_are_rechecked():
    base = "https://platform.example.org/files/a.png"
    assert POLICY.resolve("b.png", base=base) == "https://platform.example.org/files/b.png"
    with pytest.raises(OriginError):
        POLICY.resolve("//evil.example/b.png", base=base)


def test_pixel_limit_is_checked_from_the_header():
    with pytest.raises(ImageRefused, match="1000x1000 pixels"):
        decode(png_header(1000, 1000), max_pixels=999_999)


def test_formats_outside_the_allow_list_are_not_decoded():
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    with pytest.raises(ImageError):
        decode(eps, max_pixels=10**6)


def test_sixteen_bit_png_keeps_its_depth():
    arr = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)
    data = cv2.imencode(".png", arr)[1].tobytes()
    out = decode(data, max_pixels=10**6)
    assert out.dtype == np.uint16 and np.array_equal(out, arr)
