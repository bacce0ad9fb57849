"""Image files are reachable only through signed, expiring URLs."""

from __future__ import annotations

import time

import pytest
from django.test import Client

from annotations.models import Image
from annotations.services import ingest, signing
from annotations.tasks import ingest_file

pytestmark = pytest.mark.django_db


@pytest.fixture
def image(project, png_images):
    batch = ingest.ingest_batch_create(project=project, inputs=png_images[:1])
    ingest_file.delay(item_id=batch.items.get().id)
    return Image.objects.get()


def test_valid_signature_serves_png_with_cors(image, settings):
    settings.IMAGE_CORS_ORIGINS = ["http://127.0.0.1:8080"]
    path = signing.signed_image_path(image.pseudo_id, "display")
    resp = Client().get(path, HTTP_ORIGIN="http://127.0.0.1:8080")
    assert resp.status_code == 200
    assert resp["Content-Type"] == "image/png"
    assert resp["Access-Control-Allow-Origin"] == "http://127.0.0.1:8080"
    assert b"".join(resp.streaming_content).startswith(b"\x89PNG")


def test_foreign_origin_gets_no_cors_header(image):
    path = signing.signed_image_path(image.pseudo_id, "thumbnail")
    resp = Client().get(path, HTTP_ORIGIN="http://evil.example")
    assert resp.status_code == 200
    assert "Access-Control-Allow-Origin" not in resp


@pytest.mark.parametrize("tamper", ["sig", "exp", "variant", "image", "missing"])
def test_tampered_signature_is_refused(image, tamper):
    path = signing.signed_image_path(image.pseudo_id, "display")
    if tamper == "sig":
        path = path[:-4] + ("0000" if not path.endswith("0000") else "1111")
    elif tamper == "exp":
        path = path.replace("exp=", "exp=9")
    elif tamper == "variant":
        path = path.replace("/display.png", "/thumbnail.png")
    elif tamper == "image":
        other = signing.signed_image_path("IMG-other", "display")
        path = path.split("?")[0] + "?" + other.split("?")[1]
    else:
        path = path.split("?")[0]
    assert Client().get(path).status_code == 403


def test_expired_signature_is_refused(image):
    path = signing.signed_image_path(image.pseudo_id, "display", ttl=10,
                                     now=time.time() - 60)
    resp = Client().get(path)
    assert resp.status_code == 403
    assert resp.json()["error"]["message"] == "the link has expired"


def test_unknown_image_with_valid_signature_is_404(image):
    assert Client().get(signing.signed_image_path("IMG-nope", "display")).status_code == 404


def test_api_rows_carry_working_urls(image, admin_user):
    from rest_framework.test import APIClient

    c = APIClient()
    c.force_authenticate(admin_user)
    row = c.get(f"/api/images/{image.pseudo_id}/").json()
    path = row["display_url"].split("127.0.0.1:8000", 1)[1]
    assert Client().get(path).status_code == 200
