"""Every input is bounded before it is expanded: uploads while they stream, zips from
their directory, image sizes from their headers, XML without entity expansion.
Each refusal says why and leaves what was stored as it was."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from annotations.archives import ZipLimits, zip_check
from annotations.errors import DomainError
from annotations.imaging import loader
from annotations.models import Image, IngestBatch, IngestItem, ReaderAnnotation
from tests.conftest import ingest_paths, write_png
from tests.webapp.test_quick_read import png_bomb

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_api(admin_user) -> APIClient:
    client = APIClient()
    client.force_authenticate(admin_user)
    return client


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _nothing_staged(settings) -> bool:
    root = Path(settings.STAGING_ROOT)
    return not root.exists() or not any(p.is_file() for p in root.rglob("*"))


# --- uploads, counted while they stream -------------------------------------------------


def test_upload_over_the_file_limit_is_refused_while_streaming(project, admin_api, settings):
    settings.UPLOAD_MAX_FILE_BYTES = 4096
    res = admin_api.post("/api/projects/test/uploads/", {"files": [
        SimpleUploadedFile("a.dcm", b"\x00" * 100_000)]}, format="multipart")
    assert res.status_code == 413
    assert res.json()["error"] == {"code": "too_large",
                                   "message": "a file is larger than 4096 bytes"}
    assert not IngestBatch.objects.exists() and _nothing_staged(settings)


def test_upload_over_the_request_limit_is_refused_while_streaming(project, admin_api,
                                                                  settings):
    settings.UPLOAD_MAX_REQUEST_BYTES = 10_000
    files = [SimpleUploadedFile(f"{i}.dcm", b"\x00" * 4000) for i in range(3)]
    res = admin_api.post("/api/projects/test/uploads/", {"files": files}, format="multipart")
    assert res.status_code == 413
    assert "together" in res.json()["error"]["message"]
    assert not IngestBatch.objects.exists()


def test_upload_handler_stops_at_the_first_chunk_past_the_limit(settings):
    """The refusal comes while reading, not after the whole body is in."""
    from annotations.api.uploads import LimitedUploadHandler, UploadTooLarge

    settings.UPLOAD_MAX_FILE_BYTES = 3 * 1024
    handler = LimitedUploadHandler(None)
    handler.new_file("files", "a.dcm", "application/octet-stream", None)
    chunk = b"\x00" * 1024
    for i in range(3):
        assert handler.receive_data_chunk(chunk, i * 1024) == chunk
    with pytest.raises(UploadTooLarge):
        handler.receive_data_chunk(chunk, 3 * 1024)
    # a declared body above the request limit is refused before it is read
    settings.UPLOAD_MAX_REQUEST_BYTES = 10 * 1024 * 1024
    with pytest.raises(UploadTooLarge):
        LimitedUploadHandler(None).handle_raw_input(None, {}, 64 * 1024 * 1024, b"x")


def test_upload_within_the_limits_still_ingests(project, admin_api, tmp_path,
                                                django_capture_on_commit_callbacks):
    png = write_png(tmp_path / "ok.png", seed=3).read_bytes()
    with django_capture_on_commit_callbacks(execute=True):
        res = admin_api.post("/api/projects/test/uploads/", {"files": [
            SimpleUploadedFile("ok.png", png)]}, format="multipart")
    assert res.status_code == 202, res.content[:300]
    assert IngestItem.objects.get().status == "imported"


# --- zips, checked from their directory ---------------------------------------------------


def test_zip_with_too_many_members_is_refused(project, tmp_path, settings):
    settings.ZIP_MAX_MEMBERS = 5
    archive = tmp_path / "many.zip"
    archive.write_bytes(_zip({f"{i}.png": b"x" for i in range(6)}))
    with pytest.raises(DomainError) as err:
        ingest_paths(project, [write_png(tmp_path / "first.png", seed=1), archive])
    assert err.value.code == "zip_too_many_members" and err.value.status == 413
    assert "at most 5" in err.value.message
    # all or nothing: the file staged before the zip is removed, no batch remains
    assert not IngestBatch.objects.exists() and _nothing_staged(settings)


def test_zip_bomb_is_refused_by_its_compression_ratio(project, tmp_path, settings):
    archive = tmp_path / "bomb.zip"
    archive.write_bytes(_zip({"a.dcm": b"\x00" * (8 * 1024 * 1024)}))
    assert archive.stat().st_size < 64 * 1024
    with pytest.raises(DomainError) as err:
        ingest_paths(project, [archive])
    assert err.value.code == "zip_ratio_exceeded"
    assert not IngestBatch.objects.exists()


def test_zip_expanding_past_the_total_limit_is_refused(project, tmp_path, settings):
    settings.ZIP_MAX_TOTAL_BYTES = 100_000
    rng = np.random.default_rng(0)
    archive = tmp_path / "big.zip"
    archive.write_bytes(_zip({f"{i}.dcm": rng.bytes(40_000) for i in range(3)}))
    with pytest.raises(DomainError) as err:
        ingest_paths(project, [archive])
    assert err.value.code == "zip_too_large"


def test_zip_whose_members_overlap_is_refused_before_expansion():
    """Overlapping members (each claims the same compressed bytes) add up."""
    one = _zip({"a": b"\x00" * 400_000})
    zf = zipfile.ZipFile(io.BytesIO(one))
    info = zf.infolist()[0]
    zf.filelist.extend([info] * 50)  # 51 entries, one payload
    with pytest.raises(DomainError) as err:
        zip_check(zf, ZipLimits(max_total_bytes=10_000_000, max_ratio=10_000))
    assert err.value.code == "zip_too_large"


def test_zip_within_the_limits_still_ingests(project, tmp_path):
    archive = tmp_path / "ok.zip"
    archive.write_bytes(_zip({f"img{i}.png": write_png(tmp_path / f"{i}.png", seed=i)
                              .read_bytes() for i in range(2)}))
    batch = ingest_paths(project, [archive])
    assert sorted(batch.items.values_list("status", flat=True)) == ["imported", "imported"]


def test_import_zip_with_too_many_members_is_refused(project, admin_api, settings):
    settings.ZIP_MAX_MEMBERS = 3
    data = _zip({f"Annotations/{i}.xml": b"<annotation/>" for i in range(4)})
    res = admin_api.post("/api/projects/test/imports/", {
        "file": SimpleUploadedFile("voc.zip", data), "format": "voc"}, format="multipart")
    assert res.status_code == 413
    assert res.json()["error"]["code"] == "zip_too_many_members"
    assert not ReaderAnnotation.objects.exists()


def test_import_zip_expanding_past_the_import_limit_is_refused(project, admin_api, settings):
    settings.IMPORT_MAX_BYTES = 50_000
    rows = b"image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max\n" * 500
    data = _zip({"a.csv": rows, "b.csv": rows})  # a small upload, 60 KB expanded
    assert len(data) < 5_000
    res = admin_api.post("/api/projects/test/imports/", {
        "file": SimpleUploadedFile("big.zip", data), "format": "vinbigdata"},
        format="multipart")
    assert res.status_code == 413
    assert res.json()["error"]["code"] == "zip_too_large"


# --- XML ------------------------------------------------------------------------------------

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<annotation><filename>&lol9;</filename>
<size><width>300</width><height>240</height><depth>1</depth></size></annotation>
"""

EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE annotation [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<annotation><filename>&secret;</filename></annotation>
"""


@pytest.mark.parametrize("xml", [BILLION_LAUGHS, EXTERNAL_ENTITY], ids=["laughs", "xxe"])
def test_voc_billion_laughs_is_refused(project, admin_api, xml):
    data = _zip({"Annotations/a.xml": xml.encode()})
    res = admin_api.post("/api/projects/test/imports/", {
        "file": SimpleUploadedFile("voc.zip", data), "format": "voc"}, format="multipart")
    assert res.status_code == 400
    error = res.json()["error"]
    assert error["code"] == "invalid_voc"
    assert error["detail"] == [{"file": "Annotations/a.xml", "error":
                                "XML with a DTD or entity declarations is not accepted"}]
    assert "lol" not in res.content.decode() and "root:" not in res.content.decode()
    assert not ReaderAnnotation.objects.exists()


# --- image dimensions, from the header ---------------------------------------------------


def _no_decode(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("decoded before the size was checked")

    monkeypatch.setattr(cv2, "imdecode", refuse)
    monkeypatch.setattr(loader, "_decode", refuse)


def test_png_bomb_in_ingest_is_quarantined_before_decoding(project, tmp_path, monkeypatch):
    _no_decode(monkeypatch)
    path = tmp_path / "bomb.png"
    path.write_bytes(png_bomb())
    item = ingest_paths(project, [path]).items.get()
    assert (item.status, item.reason) == ("quarantined", "implausible_size")
    assert not Image.objects.exists()


def test_jpeg_header_claiming_a_huge_image_is_refused_before_decoding(tmp_path, monkeypatch):
    ok, jpeg = cv2.imencode(".jpg", np.full((200, 160), 128, np.uint8))
    data = bytearray(jpeg.tobytes())
    assert loader.raster_dimensions(bytes(data)) == (160, 200)
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = (60000).to_bytes(2, "big") + (65000).to_bytes(2, "big")
    _no_decode(monkeypatch)
    path = tmp_path / "huge.jpg"
    path.write_bytes(bytes(data))
    with pytest.raises(DomainError) as err:
        loader.load_file(path, loader.Limits())
    assert err.value.code == "implausible_size" and "65000x60000" in err.value.message


def test_raster_without_a_readable_header_is_not_an_image(tmp_path, monkeypatch):
    _no_decode(monkeypatch)
    for data in (b"\x89PNG\r\n\x1a\n\x00\x00", b"\xff\xd8\xff\xda\x00\x08garbage"):
        path = tmp_path / "bad.bin"
        path.write_bytes(data)
        with pytest.raises(DomainError) as err:
            loader.load_file(path, loader.Limits())
        assert err.value.code == "not_an_image"


def test_dicom_rows_and_columns_are_checked_before_pixel_decode(tmp_path, monkeypatch):
    from annotations.imaging.synthetic.dicom_writer import make_dataset

    ds = make_dataset(np.zeros((256, 256)), rng=np.random.default_rng(0))
    ds.Rows, ds.Columns = 50000, 50000
    path = tmp_path / "huge.dcm"
    ds.save_as(path, enforce_file_format=True)
    _no_decode(monkeypatch)
    with pytest.raises(DomainError) as err:
        loader.load_file(path, loader.Limits())
    assert err.value.code == "implausible_size"
