"""A malformed corpus (>= 200 bad files) mixed with good ones: zero crashes,
every bad file quarantined with a reason, every good file imported."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate

from annotations.imaging.synthetic import generate_studies
from annotations.models import Image, IngestItem
from annotations.services import ingest, storage
from annotations.tasks import ingest_file

pytestmark = pytest.mark.django_db

N_BASES = 14


def _save(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=False)
    return buf.getvalue()


def _edit(fn: Callable[[Dataset], None]) -> Callable[[bytes], bytes]:
    def mutate(raw: bytes) -> bytes:
        ds = pydicom.dcmread(io.BytesIO(raw))
        fn(ds)
        return _save(ds)
    return mutate


def _set(**attrs) -> Callable[[bytes], bytes]:
    return _edit(lambda ds: [setattr(ds, k, v) for k, v in attrs.items()])


def _pixel_offset(raw: bytes) -> int:
    return raw.rfind(b"\xe0\x7f\x10\x00")


def _relabel_syntax(uid: str) -> Callable[[bytes], bytes]:
    """Claim a compression the pixel data does not have (encapsulated, so it parses)."""
    def mutate(raw: bytes) -> bytes:
        ds = pydicom.dcmread(io.BytesIO(raw))
        if not ds.file_meta.TransferSyntaxUID.is_compressed:
            ds.PixelData = encapsulate([bytes(ds.PixelData[:4096])])
            ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = uid
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=False, implicit_vr=False, little_endian=True)
        return buf.getvalue()
    return mutate


# mutation -> (function, reasons it may legitimately be quarantined with)
MUTATIONS: dict[str, tuple[Callable[[bytes], bytes], set[str]]] = {
    "truncated_header": (lambda raw: raw[: 132 + (len(raw) % 97) + 40],
                         {"unreadable_dicom", "no_pixel_data", "not_an_image"}),
    "truncated_pixels": (lambda raw: raw[: _pixel_offset(raw) + (len(raw) - _pixel_offset(raw))
                                         // 2],
                         {"pixel_decode_failed", "unreadable_dicom"}),
    "modality_ct": (_set(Modality="CT"), {"not_radiograph"}),
    "modality_missing": (_edit(lambda ds: delattr(ds, "Modality")), {"not_radiograph"}),
    "no_pixel_data": (_edit(lambda ds: delattr(ds, "PixelData")), {"no_pixel_data"}),
    "huge": (_set(Rows=20000), {"implausible_size"}),
    "tiny": (_set(Rows=64, Columns=64), {"implausible_size"}),
    "burned_in": (_set(BurnedInAnnotation="YES"), {"burned_in_annotation"}),
    "rgb": (_set(PhotometricInterpretation="RGB"), {"unsupported_photometric"}),
    "multi_frame": (_set(NumberOfFrames=2), {"multi_frame"}),
    "jpeg_ls_label": (_relabel_syntax("1.2.840.10008.1.2.4.80"),
                      {"unsupported_transfer_syntax", "pixel_decode_failed"}),
    "unknown_syntax": (_relabel_syntax("1.2.3.4.5.6.7"),
                       {"unsupported_transfer_syntax", "pixel_decode_failed",
                        "unreadable_dicom"}),
    "wrong_bits": (_set(BitsAllocated=8), {"pixel_decode_failed", "unreadable_dicom"}),
    "preamble_only": (lambda raw: raw[:132] + b"\x00" * 7,
                      {"unreadable_dicom", "no_pixel_data", "not_an_image"}),
}

JUNK: dict[str, tuple[bytes, set[str]]] = {
    "empty": (b"", {"empty_file"}),
    "text": (b"Patient list\nthis is not an image\n" * 20, {"not_an_image"}),
    "zeros": (b"\x00" * 4096, {"not_an_image", "unreadable_dicom"}),
    "png_truncated": (b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, {"not_an_image"}),
    "jpeg_truncated": (b"\xff\xd8\xff\xe0" + b"\x01" * 30, {"not_an_image"}),
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict[str, set[str]], int]:
    """Write the corpus; return its folder, expected reasons per bad file, fuzz count."""
    root = tmp_path_factory.mktemp("corpus")
    bases = generate_studies(root / "a_good", N_BASES, seed=21, anatomy="phantom",
                             size=(384, 320), compressed_fraction=0.3).files
    for csv in (root / "a_good").glob("*.csv"):
        csv.unlink()  # ground truth and reader CSVs: not part of this corpus
    bad = root / "b_bad"
    bad.mkdir()
    expected: dict[str, set[str]] = {}
    for i, base in enumerate(bases):
        raw = base.read_bytes()
        for name, (fn, reasons) in MUTATIONS.items():
            fname = f"{i:02d}_{name}.dcm"
            (bad / fname).write_bytes(fn(raw))
            expected[fname] = reasons
    rng = np.random.default_rng(0)
    for j in range(8):
        for name, (payload, reasons) in JUNK.items():
            extra = rng.bytes(int(rng.integers(0, 64))) if name != "empty" else b""
            fname = f"junk_{j}_{name}.dcm"
            (bad / fname).write_bytes(payload + extra)
            expected[fname] = reasons
    fuzz = root / "c_fuzz"
    fuzz.mkdir()
    for k in range(30):  # random header corruption: any clean outcome is acceptable
        raw = bytearray(bases[k % N_BASES].read_bytes())
        for pos in rng.integers(132, min(len(raw), 1500), size=8):
            raw[pos] = int(rng.integers(0, 256))
        (fuzz / f"fuzz_{k}.dcm").write_bytes(bytes(raw))
    assert len(expected) >= 200
    return root, expected, 30


def test_malformed_corpus(project, corpus):
    root, expected, n_fuzz = corpus
    names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    batch = ingest.ingest_batch_create(project=project, inputs=[root])
    for item_id in batch.items.order_by("seq").values_list("id", flat=True):
        ingest_file.delay(item_id=item_id)  # eager: an exception here fails the test
    items = list(batch.items.order_by("seq"))
    assert len(items) == len(names) == N_BASES + len(expected) + n_fuzz

    outcome = dict(zip(names, items, strict=True))
    wrong = []
    for name, item in outcome.items():
        assert item.status not in ("pending", "failed"), (name, item.status, item.detail)
        assert item.reason not in ("processing_error", "render_failed"), (name, item.detail)
        base = name.split("/", 1)[1]
        if name.startswith("a_good/"):
            ok = item.status == "imported"
        elif name.startswith("b_bad/"):
            ok = item.status == "quarantined" and item.reason in expected[base]
            ok = ok and storage.exists(storage.QUARANTINE, item.quarantine_path) and bool(
                    item.detail)
        else:
            ok = item.status in ("imported", "duplicate", "quarantined")
        if not ok:
            wrong.append((name, item.status, item.reason, item.detail))
    assert wrong == []
    assert Image.objects.filter(project=project).count() >= N_BASES
    reasons = Counter(i.reason for i in items if i.status == "quarantined")
    assert len(reasons) >= 10, reasons
    assert not IngestItem.objects.filter(batch=batch, status="pending").exists()
