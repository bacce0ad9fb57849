"""Attacks on the real ML backend app: moving it to another Label Studio, making it
fetch from anywhere, and feeding it more than it should read.  A counting listener
stands in for the attacker's server: nothing may ever connect to it."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import cv2
import pytest
import requests

from tests.ml_backend.listeners import Reply, png_header, recording_server
from tests.ml_backend.servers import PASSWORD, USER, backend, model_dir_with, serve_wsgi
from tests.training.films import film

AUTH = (USER, PASSWORD)
SAMPLES = Path(__file__).resolve().parents[1] / "label_studio" / "samples"
SCHEMA = json.loads((SAMPLES / "ml_setup.json").read_text())["body"]["schema"]
LIMITS = {"max_tasks": 3, "max_body_bytes": 4096, "max_image_bytes": 64 << 10,
          "max_image_pixels": 100_000, "image_deadline": 1.5, "image_timeout": 0.5,
          "image_connect_timeout": 0.5}


@pytest.fixture(scope="module")
def lesion() -> bytes:
    return cv2.imencode(".png", film(0))[1].tobytes()


@pytest.fixture
def canary(lesion):
    """The foreign origin: it would even serve a good image, if anyone came."""
    with recording_server(default=Reply(200, {"Content-Type": "image/png"}, lesion)) as c:
        yield c


@pytest.fixture
def world(trained_version, tmp_path, canary, lesion):
    canary_url, _ = canary
    png = {"Content-Type": "image/png"}
    with recording_server({"/data/lesion.png": Reply(200, png, lesion)}) as (ls, ls_seen):
        images = {
            "/lesion.png": Reply(200, png, lesion),
            "/to-canary.png": Reply(302, {"Location": f"{canary_url}/x.png"}),
            "/to-ls.png": Reply(302, {"Location": f"{ls}/data/lesion.png"}),
            "/loop.png": Reply(302, {"Location": "/loop.png"}),
            "/huge-header.png": Reply(200, png, png_header(1000, 1000)),
            "/bomb.png": Reply(200, png, png_header(100_000, 100_000)),
            "/big.png": Reply(200, png, lesion + b"\0" * (100 << 10)),
            "/big-unsized.png": Reply(200, png, lesion + b"\0" * (100 << 10), length=False),
            "/slow.png": Reply(200, png, lesion, trickle=0.05),
        }
        with recording_server(images) as (img, img_seen):
            app = backend(model_dir_with(trained_version.directory, tmp_path),
                          label_studio_url=ls, image_origins=(img,), **LIMITS)
            with serve_wsgi(app) as url:
                yield {"url": url, "app": app, "ls": ls, "ls_seen": ls_seen, "img": img,
                       "img_seen": img_seen}


def _predict(world, *images: str) -> requests.Response:
    tasks = [{"id": i + 1, "data": {"image": image}} for i, image in enumerate(images)]
    return requests.post(f"{world['url']}/predict", json={"project": "1.2", "tasks": tasks},
                         auth=AUTH, timeout=60)


def _setup(world, **fields) -> requests.Response:
    return requests.post(f"{world['url']}/setup", auth=AUTH, timeout=30,
                         json={"project": "1.2", "schema": SCHEMA, **fields})


def _authorization(seen) -> list[str | None]:
    return [headers.get("Authorization") for _, headers in seen.requests]


@pytest.mark.parametrize("hostname", [
    "{canary}", "{canary}/", "http://x@{canary_host}", "file:///etc/passwd", "not a url"])
def test_setup_with_foreign_host_is_refused_and_nothing_fetched(world, canary, hostname):
    canary_url, canary_seen = canary
    hostname = hostname.format(canary=canary_url, canary_host=canary_url.split("//")[1])
    resp = _setup(world, hostname=hostname, access_token="token-for-the-attacker")
    assert resp.status_code == 400, resp.text
    assert "token-for-the-attacker" not in resp.text
    assert world["app"].state.access_token is None
    # the backend still fetches LS-hosted images from the configured Label Studio only
    ok = _predict(world, "/data/lesion.png")
    assert ok.status_code == 200 and ok.json()["results"][0]["result"]
    assert canary_seen.connections == 0
    assert _authorization(world["ls_seen"]) == [None]


def test_setup_names_the_configured_host_in_its_refusal(world, canary):
    resp = _setup(world, hostname=canary[0], access_token="t0")
    error = resp.json()["error"]
    assert "is not the Label Studio this backend serves" in error
    assert "CXR_ML_LABEL_STUDIO_URL" in error


def test_setup_token_without_the_host_is_refused(world):
    resp = _setup(world, access_token="orphan-token")
    assert resp.status_code == 400 and "hostname" in resp.json()["error"]
    assert world["app"].state.access_token is None


def test_label_studio_token_goes_to_label_studio_only(world):
    assert _setup(world, hostname=world["ls"], access_token="ls-token-1").status_code == 200
    resp = _predict(world, "/data/lesion.png", f"{world['img']}/lesion.png",
                    f"{world['img']}/to-ls.png")
    assert resp.status_code == 200, resp.text
    assert all(r["result"] for r in resp.json()["results"])
    assert _authorization(world["ls_seen"]) == ["Token ls-token-1"] * 2
    assert _authorization(world["img_seen"]) == [None, None]


@pytest.mark.parametrize("image", [
    "{canary}/x.png", "http://user:pw@{canary_host}/x.png", "file:///etc/passwd",
    "ftp://{canary_host}/x.png", "HTTP://{canary_host}/x.png"])
def test_predict_with_foreign_url_is_refused_and_nothing_fetched(world, canary, image):
    canary_url, canary_seen = canary
    image = image.format(canary=canary_url, canary_host=canary_url.split("//")[1])
    resp = _predict(world, f"{world['img']}/lesion.png", image)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"].startswith("task 1: image URL")
    assert canary_seen.connections == 0
    assert world["img_seen"].connections == 0  # checked before anything is fetched


def test_redirect_to_foreign_origin_is_refused_and_nothing_fetched(world, canary):
    resp = _predict(world, f"{world['img']}/to-canary.png")
    assert resp.status_code == 422, resp.text
    assert "redirect" in resp.json()["error"] and "not an allowed" in resp.json()["error"]
    assert canary[1].connections == 0


def test_redirect_loop_is_bounded(world):
    resp = _predict(world, f"{world['img']}/loop.png")
    assert resp.status_code == 422 and "more than 3 redirects" in resp.json()["error"]
    assert len(world["img_seen"].requests) == 4


def _raw_post(url: str, head: str, body: bytes = b"") -> str:
    """Send a request by hand (headers that ``requests`` would correct) and read the reply."""
    host, port = url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.encode() + b"\r\n" + body)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def _auth_header() -> str:
    import base64

    return "Authorization: Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


def test_oversized_body_is_refused_before_it_is_read(world):
    """A 1 GB Content-Length and no body: the answer comes without waiting for it."""
    start = time.monotonic()
    reply = _raw_post(world["url"], f"POST /predict HTTP/1.1\r\nHost: x\r\n{_auth_header()}\r\n"
                      "Content-Type: application/json\r\nContent-Length: 1000000000\r\n")
    assert reply.startswith("HTTP/1.0 413") or reply.startswith("HTTP/1.1 413"), reply
    assert "CXR_ML_MAX_BODY_BYTES" in reply and time.monotonic() - start < 5


def test_chunked_body_without_length_is_refused(world):
    reply = _raw_post(world["url"], f"POST /predict HTTP/1.1\r\nHost: x\r\n{_auth_header()}\r\n"
                      "Transfer-Encoding: chunked\r\n", b"2\r\n{}\r\n0\r\n\r\n")
    assert " 411 " in reply.split("\r\n")[0], reply


def test_body_is_read_no_further_than_its_length():
    from io import BytesIO

    from ml_backend.app import _read_json

    stream = BytesIO(b'{"a": 1}' + b"x" * 10_000)
    assert _read_json({"CONTENT_LENGTH": "8", "wsgi.input": stream}, 100) == {"a": 1}
    assert stream.tell() == 8


def test_too_many_tasks_are_refused_and_nothing_fetched(world):
    resp = _predict(world, *[f"{world['img']}/lesion.png"] * 4)
    assert resp.status_code == 400 and "CXR_ML_MAX_TASKS" in resp.json()["error"]
    assert world["img_seen"].connections == 0


@pytest.mark.parametrize("path", ["/huge-header.png", "/bomb.png"])
def test_image_too_large_in_pixels_is_refused_before_decoding(world, monkeypatch, path):
    from PIL import ImageFile

    decoded = []
    original = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load",
                        lambda self: decoded.append(self.size) or original(self))
    resp = _predict(world, f"{world['img']}{path}")
    assert resp.status_code == 422, resp.text
    assert "pixel" in resp.json()["error"]
    assert decoded == []


@pytest.mark.parametrize("path", ["/big.png", "/big-unsized.png"])
def test_image_too_large_in_bytes_is_refused(world, path):
    resp = _predict(world, f"{world['img']}{path}")
    assert resp.status_code == 422 and "CXR_ML_MAX_IMAGE_BYTES" in resp.json()["error"]


def test_trickling_image_server_hits_the_deadline_not_the_batch(world):
    start = time.monotonic()
    resp = _predict(world, f"{world['img']}/slow.png", f"{world['img']}/lesion.png")
    assert resp.status_code == 200
    results = resp.json()["results"]
    assert results[0]["result"] == [] and results[1]["result"]
    assert time.monotonic() - start < LIMITS["image_deadline"] + 10


def test_platform_redirect_does_not_carry_the_service_token(tmp_path, canary):
    canary_url, canary_seen = canary
    with recording_server(default=Reply(307, {"Location": f"{canary_url}/api/"})) as (
            platform, seen):
        app = backend(tmp_path, platform_url=platform, platform_token="svc-token")
        with serve_wsgi(app) as url:
            resp = requests.post(f"{url}/webhook", auth=AUTH, timeout=30,
                                 json={"action": "START_TRAINING", "project": {"id": 3}})
    assert resp.status_code == 502
    assert _authorization(seen) == ["Service svc-token"]
    assert canary_seen.connections == 0
