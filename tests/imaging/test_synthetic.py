"""Synthetic study generator: DICOM validity, truth boxes, readers, determinism."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless, RLELossless

from annotations.errors import DomainError
from annotations.imaging.synthetic import (
    CSV_HEADER,
    ReaderProfile,
    generate_studies,
    make_dataset,
)
from annotations.imaging.synthetic.identity import DEMOGRAPHIC_KEYS
from annotations.imaging.synthetic.lesions import CARDIOMEGALY, NODULE, Box
from annotations.imaging.synthetic.phantom import render_phantom
from annotations.imaging.synthetic.readers import default_profiles, simulate_readers

REQUIRED = {"Nodule/Mass", "Cardiomegaly", "Pleural effusion", "Consolidation", "Pneumothorax"}


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("synthetic")
    return generate_studies(out, 14, seed=3, size=(640, 560), compressed_fraction=0.3)


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_files_are_valid_dicom_and_decode(studies) -> None:
    assert len(studies.files) == len(studies.image_ids) == len(studies.identities) == 14
    for f, image_id in zip(studies.files, studies.image_ids, strict=True):
        assert f.name == f"{image_id}.dcm" and len(image_id) == 32
        raw = f.read_bytes()
        assert raw[128:132] == b"DICM"
        ds = pydicom.dcmread(f)
        assert ds.SOPClassUID in ("1.2.840.10008.5.1.4.1.1.1", "1.2.840.10008.5.1.4.1.1.1.1")
        assert ds.Modality in ("CR", "DX") and ds.ViewPosition in ("PA", "AP")
        assert ds.BitsAllocated == 16 and 12 <= ds.BitsStored <= 16
        assert ds.HighBit == ds.BitsStored - 1 and ds.PixelRepresentation == 0
        assert ds.BurnedInAnnotation == "NO"
        arr = ds.pixel_array
        assert arr.shape == (640, 560)
        assert int(arr.max()) < (1 << ds.BitsStored)
    assert not list(studies.files[0].parent.glob("*.part"))


def test_compressed_files_exist_and_decode(studies) -> None:
    syntaxes = [pydicom.dcmread(f).file_meta.TransferSyntaxUID for f in studies.files]
    compressed = [s for s in syntaxes if s.is_compressed]
    assert len(compressed) == round(0.3 * 14)
    assert {RLELossless, JPEG2000Lossless} <= set(compressed)


def test_identity_written_and_one_patient_has_two_studies(studies) -> None:
    for f, ident in zip(studies.files, studies.identities, strict=True):
        ds = pydicom.dcmread(f)
        for key in ("PatientName", "PatientID", "PatientBirthDate", "InstitutionName",
                    "AccessionNumber", "StudyInstanceUID", "SeriesInstanceUID",
                    "SOPInstanceUID", "ReferringPhysicianName"):
            assert str(ds[key].value) == ident[key]
        block = ds.private_block(0x0009, "ACME 1.0")
        value = block[0x01].value
        if isinstance(value, bytes):  # implicit VR: an unknown private tag reads back as UN
            value = value.decode("latin-1").rstrip(" \x00")
        assert value == ident["Private_0009_1001"]
        assert ident["PatientName"] in ident["Private_0009_1001"]
    ids = [i["PatientID"] for i in studies.identities]
    assert len(set(ids)) < len(ids)
    assert len({i["StudyInstanceUID"] for i in studies.identities}) == 14
    assert DEMOGRAPHIC_KEYS <= set(studies.identities[0])


def test_monochrome1_is_inverted() -> None:
    r = render_phantom(512, 512, [], np.random.default_rng(0))
    rng = np.random.default_rng(1)
    m1 = make_dataset(r.image, rng=rng, photometric="MONOCHROME1", bits_stored=12)
    m2 = make_dataset(r.image, rng=rng, photometric="MONOCHROME2", bits_stored=12)
    a1, a2 = m1.pixel_array.astype(int), m2.pixel_array.astype(int)
    assert np.array_equal(a1, 4095 - a2)
    # Right lung (viewer's left, upper middle) vs mediastinum (centre column).
    lung = a1[150:250, 120:180].mean()
    mediastinum = a1[300:400, 236:276].mean()
    assert lung > mediastinum  # raw MONOCHROME1: aerated lung stores high values
    assert a2[150:250, 120:180].mean() < a2[300:400, 236:276].mean()


def test_boxes_inside_image_and_on_lesion() -> None:
    diffs = []
    for seed in range(6):
        r = render_phantom(768, 768, [NODULE], np.random.default_rng(seed))
        assert len(r.boxes) == 1
        b = r.boxes[0]
        assert 0 <= b.x_min < b.x_max <= 768 and 0 <= b.y_min < b.y_max <= 768
        x0, y0, x1, y1 = (int(v) for v in (b.x_min, b.y_min, b.x_max, b.y_max))
        inner = r.image[y0:y1, x0:x1].mean()
        pad = max(x1 - x0, y1 - y0)
        ring = r.image[max(0, y0 - pad):y1 + pad, max(0, x0 - pad):x1 + pad]
        box_sum = r.image[y0:y1, x0:x1].sum()
        outer = (ring.sum() - box_sum) / (ring.size - (y1 - y0) * (x1 - x0))
        diffs.append(inner - outer)
    # A nodule adds density: the box is brighter than its surroundings on average.
    assert np.mean(diffs) > 0.01


def test_cardiomegaly_box_is_wider_than_normal_heart() -> None:
    r = render_phantom(768, 768, [CARDIOMEGALY], np.random.default_rng(5))
    (b,) = r.boxes
    assert b.class_name == CARDIOMEGALY and b.width > 0.3 * 768


def test_ground_truth_csv_format(studies) -> None:
    with open(studies.ground_truth_csv) as fh:
        assert fh.readline().strip() == ",".join(CSV_HEADER)
    rows = _csv(studies.ground_truth_csv)
    assert {r["image_id"] for r in rows} == set(studies.image_ids)
    assert {r["rad_id"] for r in rows} == {"GT"}
    names = {r["class_name"] for r in rows}
    assert REQUIRED <= names and "No finding" in names
    for r in rows:
        if r["class_name"] == "No finding":
            assert r["class_id"] == "14" and r["x_min"] == r["y_max"] == ""
        else:
            x0, y0, x1, y1 = (float(r[k]) for k in ("x_min", "y_min", "x_max", "y_max"))
            assert 0 <= x0 < x1 <= 560 and 0 <= y0 < y1 <= 640
    readers = _csv(studies.readers_csv)
    per_image: dict[str, set[str]] = {}
    for r in readers:
        per_image.setdefault(r["image_id"], set()).add(r["rad_id"])
    assert all(len(v) == 3 for v in per_image.values()) and len(per_image) == 14
    assert {c for v in per_image.values() for c in v} <= {f"R{i}" for i in range(1, 6)}


def test_deterministic(tmp_path: Path) -> None:
    a = generate_studies(tmp_path / "a", 4, seed=11, size=(384, 384), compressed_fraction=0.5)
    b = generate_studies(tmp_path / "b", 4, seed=11, size=(384, 384), compressed_fraction=0.5)
    c = generate_studies(tmp_path / "c", 4, seed=12, size=(384, 384), compressed_fraction=0.5)

    def digest(res) -> list[str]:
        files = [*res.files, res.ground_truth_csv, res.readers_csv]
        return [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]

    assert a.image_ids == b.image_ids and digest(a) == digest(b)
    assert a.identities == b.identities
    assert digest(a) != digest(c)


def test_reader_rates_follow_profiles() -> None:
    rng = np.random.default_rng(0)
    truth = []
    for _ in range(400):
        boxes = []
        for _ in range(int(rng.integers(1, 3))):
            x, y = rng.uniform(100, 600, 2)
            boxes.append(Box("Nodule/Mass", float(x), float(y), float(x + 60), float(y + 60)))
        truth.append(boxes)
    profiles = [ReaderProfile("R1", 0.05, 0.05, 0.02), ReaderProfile("R2", 0.4, 0.8, 0.1),
                ReaderProfile("R3", 0.2, 0.3, 0.05)]
    reads = simulate_readers(truth, [(1024, 1024)] * len(truth), profiles, 3, seed=9)
    for p in profiles:
        n_true = hits = fps = images = 0
        for boxes, image_reads in zip(truth, reads, strict=True):
            drawn = dict(image_reads)[p.code]
            images += 1
            n_true += len(boxes)
            for d in drawn:
                if d.class_name == "Nodule/Mass" and max(d.iou(t) for t in boxes) > 0.3:
                    hits += 1
                else:
                    fps += 1
        assert abs((1 - hits / n_true) - p.miss_rate) < 0.06
        assert abs(fps / images - p.fp_rate) < 0.15


def test_reader_assignment_and_profiles_via_generate(tmp_path: Path) -> None:
    profiles = [ReaderProfile(f"X{i}", 0.0, 0.0, 0.0) for i in range(4)]
    res = generate_studies(tmp_path, 6, seed=1, size=(320, 320), readers=profiles,
                           readers_per_image=2, compressed_fraction=0.0)
    gt = {(r["image_id"], r["class_name"], r["x_min"]) for r in _csv(res.ground_truth_csv)}
    rows = _csv(res.readers_csv)
    assert {r["rad_id"] for r in rows} <= {p.code for p in profiles}
    # Perfect readers reproduce the truth exactly.
    assert {(r["image_id"], r["class_name"], r["x_min"]) for r in rows} == gt
    assert len(default_profiles(5, 1)) == 5


def test_invalid_arguments(tmp_path: Path) -> None:
    with pytest.raises(DomainError):
        generate_studies(tmp_path, 0, seed=1)
    with pytest.raises(DomainError):
        generate_studies(tmp_path, 2, seed=1, anatomy="mri")
    with pytest.raises(DomainError):
        generate_studies(tmp_path, 2, seed=1, readers_per_image=9)
    with pytest.raises(DomainError):
        make_dataset(np.zeros((8, 8)), rng=np.random.default_rng(0), bits_stored=10)


def test_ct_anatomy(tmp_path: Path) -> None:
    res = generate_studies(tmp_path, 6, seed=2, anatomy="ct", size=(512, 480))
    names = {b.class_name for boxes in res.truth for b in boxes}
    assert {"Nodule/Mass", "Cardiomegaly", "Pleural effusion"} & names
    for f, boxes in zip(res.files, res.truth, strict=True):
        ds = pydicom.dcmread(f)
        arr = ds.pixel_array.astype(float)
        if ds.PhotometricInterpretation == "MONOCHROME1":
            arr = arr.max() - arr
        assert arr.shape == (512, 480)
        # Lungs (upper lateral thirds) darker than the mediastinum/spine column.
        lungs = np.r_[arr[120:260, 90:170].ravel(), arr[120:260, 310:390].ravel()].mean()
        assert lungs < arr[120:260, 225:255].mean()
        for b in boxes:
            assert 0 <= b.x_min < b.x_max <= 480 and 0 <= b.y_min < b.y_max <= 512
