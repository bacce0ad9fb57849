"""Ingest of the synthetic set, duplicates, and patient identity after ingest."""

from __future__ import annotations

import datetime as dt
import io
import logging
import shutil
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from django.db import connection
from pydicom.pixels import apply_modality_lut
from rest_framework.test import APIClient

from annotations.imaging.render import resize_long_side, to_uint8
from annotations.imaging.synthetic import generate_studies
from annotations.models import Image, IngestItem, Study
from annotations.services import ingest
from annotations.services.storage import media_path
from annotations.tasks import ingest_file
from tests.imaging.test_render import pydicom_display

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    return generate_studies(out, 16, seed=5, anatomy="phantom", compressed_fraction=0.3)


def run_batch(project, inputs) -> list[IngestItem]:
    batch = ingest.ingest_batch_create(project=project, inputs=inputs)
    for item_id in batch.items.order_by("seq").values_list("id", flat=True):
        ingest_file.delay(item_id=item_id)
    return list(batch.items.order_by("seq"))


def test_synthetic_set_imports_with_exact_dimensions(project, synthetic):
    items = run_batch(project, [synthetic.files[0].parent])
    # the folder also holds the ground-truth and reader CSVs: not images
    assert Counter((i.status, i.reason) for i in items) == {
        ("imported", ""): len(synthetic.files), ("quarantined", "not_an_image"): 2}
    by_source = {i.source_key: i.image for i in items}
    syntaxes = set()
    for path in synthetic.files:
        ds = pydicom.dcmread(path)
        syntaxes.add(str(ds.file_meta.TransferSyntaxUID))
        image = by_source[ingest.source_key(path.name)]
        assert (image.width, image.height) == (ds.Columns, ds.Rows)
        assert image.photometric == ds.PhotometricInterpretation
        assert image.modality == ds.Modality
        assert max(image.display_width, image.display_height) == min(1024, max(ds.Rows,
                                                                               ds.Columns))
    assert len(syntaxes) >= 2, "the synthetic set should mix compressed and plain files"
    # patients with two images share one pseudonymous patient id
    assert Study.objects.values("patient_pseudo_id").distinct().count() <= Study.objects.count()


def test_display_matches_pydicom_voi_output(project, synthetic):
    """Files with VOI information match pydicom; files without use the documented
    0.5-99.5 percentile window (pydicom leaves such values unwindowed)."""
    items = run_batch(project, synthetic.files)
    compared = 0
    for path, item in zip(synthetic.files, items, strict=True):
        ds = pydicom.dcmread(path)
        if "VOILUTSequence" in ds or "WindowCenter" in ds:
            unit = pydicom_display(ds)
            compared += 1
        else:
            values = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
            lo, hi = np.percentile(values, [0.5, 99.5])
            unit = np.clip((values - lo) / (hi - lo), 0, 1)
            if ds.PhotometricInterpretation == "MONOCHROME1":
                unit = 1.0 - unit
        expected = resize_long_side(to_uint8(unit), 1024)
        shown = cv2.imread(str(media_path(item.image.display_path)), cv2.IMREAD_UNCHANGED)
        assert shown.shape == expected.shape
        # one 8-bit step of rounding, before and after the area resize
        assert np.abs(shown.astype(int) - expected.astype(int)).max() <= 2, path.name
    assert compared >= len(synthetic.files) // 2


def test_monochrome1_comes_out_inverted(project, synthetic):
    mono1 = [p for p in synthetic.files
             if pydicom.dcmread(p, stop_before_pixels=True).PhotometricInterpretation
             == "MONOCHROME1"]
    assert mono1, "the synthetic set should contain MONOCHROME1 files"
    items = run_batch(project, mono1)
    for path, item in zip(mono1, items, strict=True):
        ds = pydicom.dcmread(path)
        raw = apply_window_raw(ds)
        shown = cv2.imread(str(media_path(item.image.display_path)), cv2.IMREAD_UNCHANGED)
        raw_small = resize_long_side(raw, 1024)
        # display = 255 - (windowed stored values): bright where stored values are low
        assert np.corrcoef(shown.ravel(), raw_small.ravel())[0, 1] < -0.95


def apply_window_raw(ds) -> np.ndarray:
    unit = pydicom_display(ds)
    return to_uint8(1.0 - unit)  # undo the inversion: the raw (MONOCHROME2-style) mapping


def test_reimport_is_reported_as_duplicate(project, synthetic, tmp_path):
    first = run_batch(project, synthetic.files[:3])
    assert all(i.status == "imported" for i in first)
    again = run_batch(project, synthetic.files[:3])
    assert [i.reason for i in again] == ["duplicate_instance"] * 3
    assert [i.image_id for i in again] == [i.image_id for i in first]
    # same pixels under a new SOP Instance UID (e.g. re-exported) -> duplicate_pixels
    ds = pydicom.dcmread(synthetic.files[0])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    copy = tmp_path / "copy.dcm"
    ds.save_as(copy)
    assert run_batch(project, [copy])[0].reason == "duplicate_pixels"
    assert Image.objects.count() == 3


def _db_text() -> str:
    """Every stored value as text, except timestamps: a timestamp's microseconds are six
    digits that can equal a six-digit patient id by chance (identity in dates is checked
    per image on the files, where shifted dates are known)."""
    chunks = []
    with connection.cursor() as cur:
        for table in connection.introspection.table_names():
            cur.execute(f'SELECT * FROM "{table}"')
            chunks.extend(repr(tuple(v for v in row if not isinstance(
                v, dt.date | dt.time | dt.timedelta))) for row in cur.fetchall())
    return "\n".join(chunks)


def _identity_values(identities: list[dict], *, dates: bool = True) -> set[str]:
    """An identity's values of six characters or more (times carry microseconds, so
    they cannot equal six digits of a timestamp or a signature by chance)."""
    values = set()
    for ident in identities:
        for key, value in ident.items():
            text = str(value)
            if len(text) >= 6 and (dates or "Date" not in key):
                values.add(text)
    return values


def test_no_patient_identity_after_ingest(project, synthetic, admin_user, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    src = tmp_path / "src"
    src.mkdir()
    for path in synthetic.files:
        shutil.copy(path, src / path.name)
    items = run_batch(project, [src])
    assert all(i.status == "imported" for i in items)
    kinds = {k for ident in synthetic.identities for k in ident}
    for kind in ("PatientName", "PatientID", "PatientBirthDate", "InstitutionName",
                 "AccessionNumber", "StudyInstanceUID", "SOPInstanceUID"):
        assert kind in kinds, kind

    db = _db_text()
    files = [p for p in Path(media_path("")).rglob("*") if p.is_file()]
    assert len(files) == 3 * len(items)
    # Dates are shifted per patient, so a shifted date may by chance equal another
    # patient's real date: each image's files are checked against its own identity
    # (dates included) and every file against every identity's non-date values.
    secrets = _identity_values(synthetic.identities, dates=False)
    by_key = {i.source_key: i.image for i in items}
    for path, ident in zip(synthetic.files, synthetic.identities, strict=True):
        image = by_key[ingest.source_key(path.name)]
        folder = media_path(image.display_path).parent
        own = _identity_values([ident])
        for f in folder.iterdir():
            blob = f.read_bytes()
            for value in own:
                assert value.encode() not in blob, f"own identity in {f.name}: {value}"
    blobs = [(p, p.read_bytes()) for p in files]
    client = APIClient()
    client.force_authenticate(admin_user)
    api = client.get("/api/projects/test/images/?limit=1000").content.decode()
    api += client.get("/api/audit/").content.decode()
    logs = "\n".join(r.getMessage() for r in caplog.records)
    for value in secrets:
        assert value not in db, f"identity in database: {value}"
        assert value not in api, f"identity in API output or URL: {value}"
        assert value not in logs, f"identity in logs: {value}"
        needle = value.encode()
        for path, blob in blobs:
            assert needle not in blob, f"identity in {path.name}: {value}"
    # the de-identified DICOM is still a valid, displayable file
    ds = pydicom.dcmread(io.BytesIO(blobs[[p.name for p, _ in blobs].index("image.dcm")][1]))
    assert ds.PatientIdentityRemoved == "YES" and ds.pixel_array.ndim == 2
