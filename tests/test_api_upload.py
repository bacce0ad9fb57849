"""Upload API: files in, one batch, tasks run, progress and quarantine visible."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from annotations.models import AuditEvent, Image

pytestmark = pytest.mark.django_db(transaction=True)


def test_upload_ingests_and_reports(project, admin_user, png_images):
    c = APIClient()
    c.force_authenticate(admin_user)
    files = [SimpleUploadedFile(p.name, p.read_bytes(), content_type="image/png")
             for p in png_images[:2]]
    files.append(SimpleUploadedFile("notes.txt", b"not an image", content_type="text/plain"))
    resp = c.post("/api/projects/test/uploads/", {"files": files}, format="multipart")
    assert resp.status_code == 202, resp.content
    batch_id = resp.json()["id"]
    # tasks are enqueued on commit; eager in tests, so they have run by now
    batch = c.get(f"/api/ingest-batches/{batch_id}/").json()
    assert batch["counts"]["imported"] == 2 and batch["counts"]["quarantined"] == 1
    items = c.get(f"/api/ingest-batches/{batch_id}/items/").json()["results"]
    assert [i["status"] for i in items] == ["imported", "imported", "quarantined"]
    quarantine = c.get("/api/projects/test/quarantine/").json()["results"]
    assert quarantine[0]["reason"] == "not_an_image"
    assert "notes" not in str(quarantine)  # original file names are not kept
    assert Image.objects.count() == 2
    assert AuditEvent.objects.filter(action="ingest.batch_create", actor=admin_user).exists()


def test_upload_without_files_is_a_clean_error(project, admin_user):
    c = APIClient()
    c.force_authenticate(admin_user)
    resp = c.post("/api/projects/test/uploads/", {}, format="multipart")
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "invalid_upload"


def test_upload_to_unknown_project(admin_user, db):
    c = APIClient()
    c.force_authenticate(admin_user)
    resp = c.post("/api/projects/nope/uploads/", {"files": [
        SimpleUploadedFile("a.png", b"x")]}, format="multipart")
    assert resp.status_code == 404
