"""The PHI probe set: DICOM (and one file name) hiding distinctive identity strings
wherever identity has been known to hide.

Every probe is a token that cannot occur by chance (``ZQPHI001``...), a
UID with a tail of its own, a date a century before the studies, or a
number with seven decimals.  A store that holds any probe after ingest has
kept identity: tests scan the database, the derivatives, the logs and the
API for every :attr:`ProbeSet.probes` value.

Hiding places: code sequences (Institution Code Sequence, Person
Identification Code Sequence, a local-scheme code, free-text Code Meaning in
a public code), nested sequences (Referenced Patient Sequence > Patient's
Name, Request Attributes Sequence, the table's attributes inside sequences
the table does not list), private elements (top level, private sequences,
inside public sequences), group 0002 elements in the file meta and in the
dataset body, overlays (60xx) and curves (50xx), the preamble, Patient's
Weight / Size, Other Patient IDs Sequence, free-text comments (listed and
unlisted attributes), names, UIDs, times, AE titles and URLs, the data set
trailing padding, a JPEG comment segment inside encapsulated pixel data, the
file name, and header values that a refusal message could echo (Modality,
Photometric Interpretation, Transfer Syntax UID).
"""

from __future__ import annotations

import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import UID, JPEGBaseline8Bit

from annotations.imaging.synthetic.dicom_writer import make_dataset, write_dataset

#: Root of every probe UID (the pydicom organisation root, then a tail of our own).
UID_ROOT = "1.2.826.0.1.3680043.8.498.4242"
SIDE = 256


@dataclass
class ProbeSet:
    """The files written, each probe with where it hides, and each file's expected fate."""

    files: list[Path] = field(default_factory=list)
    probes: dict[str, str] = field(default_factory=dict)
    #: file name -> (status, reason) that ingest into a default project must give.
    expected: dict[str, tuple[str, str]] = field(default_factory=dict)


class _Tokens:
    """Hands out distinct probe values and records where each one hides."""

    def __init__(self, probes: dict[str, str]) -> None:
        self.probes = probes
        self.n = 0

    def text(self, where: str) -> str:
        self.n += 1
        value = f"ZQPHI{self.n:03d}"
        self.probes[value] = where
        return value

    def uid(self, where: str) -> str:
        self.n += 1
        value = f"{UID_ROOT}.{1000 + self.n}"
        self.probes[value] = where
        return value

    def raw(self, value: str, where: str) -> str:
        self.probes[value] = where
        return value


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _element_bytes(group: int, element: int, vr: str, value: bytes) -> bytes:
    """One explicit-VR little-endian element, for elements pydicom refuses to write."""
    if len(value) % 2:
        value += b"\x00" if vr in ("OB", "UN") else b" "
    if vr in ("OB", "OW", "UN", "SQ", "UT", "UC", "UR"):
        return struct.pack("<HH2sHI", group, element, vr.encode(), 0, len(value)) + value
    return struct.pack("<HH2sH", group, element, vr.encode(), len(value)) + value


def _base(seed: int, t: _Tokens) -> Dataset:
    """A valid DX radiograph (Burned In Annotation NO) with probe UIDs."""
    rng = np.random.default_rng(seed)
    identity = {kw: t.uid(kw) for kw in ("StudyInstanceUID", "SeriesInstanceUID",
                                         "SOPInstanceUID")}
    return make_dataset(rng.random((SIDE, SIDE)), rng=rng, modality="DX", identity=identity)


def _patient_probes(ds: Dataset, t: _Tokens) -> None:
    ds.PatientName = f"{t.text('PatientName family')}^{t.text('PatientName given')}"
    ds.PatientID = t.text("PatientID")
    ds.PatientBirthDate = t.raw("19030517", "PatientBirthDate")
    ds.PatientAddress = t.text("PatientAddress")
    ds.PatientTelephoneNumbers = t.text("PatientTelephoneNumbers")
    ds.PatientMotherBirthName = t.text("PatientMotherBirthName")
    ds.OtherPatientIDs = t.text("OtherPatientIDs")
    ds.PatientWeight = t.raw("61.2345678", "PatientWeight")
    ds.PatientSize = t.raw("1.87654321", "PatientSize")
    other = Dataset()
    other.PatientID = t.text("OtherPatientIDsSequence > PatientID")
    other.IssuerOfPatientID = t.text("OtherPatientIDsSequence > IssuerOfPatientID")
    other.TypeOfPatientID = "TEXT"
    ds.OtherPatientIDsSequence = Sequence([other])
    ref = Dataset()
    ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.1.1"
    ref.ReferencedSOPInstanceUID = t.uid("ReferencedPatientSequence > ReferencedSOPInstanceUID")
    ref.PatientName = t.text("ReferencedPatientSequence > PatientName")
    ds.ReferencedPatientSequence = Sequence([ref])


def _study_probes(ds: Dataset, t: _Tokens) -> None:
    ds.AccessionNumber = t.text("AccessionNumber")
    ds.StudyID = t.text("StudyID")
    ds.StudyTime = t.raw("235959.424242", "StudyTime")
    ds.AcquisitionDateTime = t.raw("20200105101530.424243", "AcquisitionDateTime")
    ds.FrameOfReferenceUID = t.uid("FrameOfReferenceUID")
    ds.CreatorVersionUID = t.uid("CreatorVersionUID (unlisted UID)")
    ds.InstitutionName = t.text("InstitutionName")
    ds.InstitutionAddress = t.text("InstitutionAddress")
    ds.InstitutionalDepartmentName = t.text("InstitutionalDepartmentName")
    ds.StationName = t.text("StationName")
    ds.DeviceSerialNumber = t.text("DeviceSerialNumber")
    ds.RetrieveAETitle = t.text("RetrieveAETitle")
    ds.RetrieveURL = f"http://pacs.invalid/{t.text('RetrieveURL (unlisted UR)')}"
    ds.OperatorsName = t.text("OperatorsName")
    ds.PerformingPhysicianName = t.text("PerformingPhysicianName")
    ds.NameOfPhysiciansReadingStudy = t.text("NameOfPhysiciansReadingStudy")
    ds.ReferringPhysicianName = t.text("ReferringPhysicianName")
    req = Dataset()
    req.RequestedProcedureID = t.text("RequestAttributesSequence > RequestedProcedureID")
    req.ScheduledProcedureStepID = t.text("RequestAttributesSequence > "
                                          "ScheduledProcedureStepID")
    req.RequestedProcedureDescription = t.text("RequestAttributesSequence > "
                                               "RequestedProcedureDescription")
    ds.RequestAttributesSequence = Sequence([req])
    image = Dataset()
    image.ReferencedSOPClassUID = ds.SOPClassUID
    image.ReferencedSOPInstanceUID = t.uid("ReferencedImageSequence > ReferencedSOPInstanceUID")
    ds.ReferencedImageSequence = Sequence([image])


def _free_text_probes(ds: Dataset, t: _Tokens) -> None:
    ds.ImageComments = f"pt {t.text('ImageComments')} bed 4"
    ds.PatientComments = t.text("PatientComments")
    ds.StudyComments = t.text("StudyComments")
    ds.AdditionalPatientHistory = t.text("AdditionalPatientHistory")
    ds.StudyDescription = f"CHEST PA {t.text('StudyDescription')}"
    ds.SeriesDescription = t.text("SeriesDescription")
    ds.ProtocolName = t.text("ProtocolName")
    ds.DerivationDescription = t.text("DerivationDescription")
    ds.AcquisitionDeviceProcessingDescription = t.text("AcquisitionDeviceProcessingDescription")
    ds.AcquisitionDeviceProcessingCode = t.text("AcquisitionDeviceProcessingCode (unlisted LO)")
    ds.DetectorDescription = f"panel of {t.text('DetectorDescription (unlisted LT)')}"


def _code_probes(ds: Dataset, t: _Tokens) -> None:
    ds.InstitutionCodeSequence = Sequence([_code(
        t.text("InstitutionCodeSequence > CodeValue"), "99HOSP",
        t.text("InstitutionCodeSequence > CodeMeaning"))])
    ds.PersonIdentificationCodeSequence = Sequence([_code(
        t.text("PersonIdentificationCodeSequence > CodeValue"), "99STAFF",
        t.text("PersonIdentificationCodeSequence > CodeMeaning"))])
    view = _code("R-10214", "SRT", f"postero-anterior {t.text('ViewCodeSequence > CodeMeaning')}")
    view.ViewModifierCodeSequence = Sequence([_code(
        t.text("ViewModifierCodeSequence > local CodeValue"), "99LOCAL",
        t.text("ViewModifierCodeSequence > CodeMeaning"))])
    nested_private = view.private_block(0x0011, "PROBE NESTED", create=True)
    nested_private.add_new(0x01, "LO", t.text("private element inside ViewCodeSequence"))
    ds.ViewCodeSequence = Sequence([view])
    region = _code("T-D3000", "SRT", f"Chest {t.text('AnatomicRegionSequence > CodeMeaning')}")
    # Attributes the table lists, inside a sequence it does not: the table applies at depth.
    region.InstitutionName = t.text("AnatomicRegionSequence > InstitutionName")
    region.PersonIdentificationCodeSequence = Sequence([_code(
        t.text("AnatomicRegionSequence > PersonIdentificationCodeSequence"), "99STAFF",
        "staff")])
    ds.AnatomicRegionSequence = Sequence([region])


def _private_probes(ds: Dataset, t: _Tokens) -> None:
    block = ds.private_block(0x0019, "PROBE VENDOR", create=True)
    block.add_new(0x01, "LO", t.text("private LO"))
    block.add_new(0x02, "UN", t.text("private UN").encode())
    item = Dataset()
    item.add_new(0x00190010, "LO", "PROBE VENDOR")
    item.add_new(0x00191001, "LO", t.text("private sequence > private LO"))
    item.PatientName = t.text("private sequence > PatientName")
    block.add_new(0x03, "SQ", Sequence([item]))


def _overlay_curve_probes(ds: Dataset, t: _Tokens) -> None:
    ds.add_new(0x60000010, "US", 16)
    ds.add_new(0x60000011, "US", 16)
    ds.add_new(0x60000022, "LO", t.text("OverlayDescription (6000,0022)"))
    ds.add_new(0x60001500, "LO", t.text("OverlayLabel (6000,1500)"))
    ds.add_new(0x60003000, "OB", t.text("OverlayData (6000,3000)").encode().ljust(32, b"\x00"))
    ds.add_new(0x60024000, "LT", t.text("OverlayComments (6002,4000)"))
    ds.add_new(0x50000022, "LO", t.text("CurveDescription (5000,0022)"))
    ds.add_new(0x50002500, "LO", t.text("CurveLabel (5000,2500)"))
    ds.add_new(0x50003000, "OB", t.text("CurveData (5000,3000)").encode().ljust(32, b"\x00"))


def _file_meta_probes(ds: Dataset, t: _Tokens) -> None:
    ds.file_meta.SourceApplicationEntityTitle = t.text("file meta SourceApplicationEntityTitle")
    ds.file_meta.ImplementationVersionName = t.text("file meta ImplementationVersionName")
    ds.file_meta.PrivateInformationCreatorUID = t.uid("file meta PrivateInformationCreatorUID")
    ds.file_meta.PrivateInformation = t.text("file meta PrivateInformation").encode()
    ds.preamble = t.text("preamble").encode().ljust(128, b"\x00")


def _write(ds: Dataset, path: Path, trailer: bytes = b"") -> Path:
    if UID(str(ds.file_meta.TransferSyntaxUID)).is_transfer_syntax:
        write_dataset(ds, path)
    else:  # pydicom needs to be told how to encode an unregistered syntax
        ds.save_as(path, implicit_vr=False, little_endian=True, enforce_file_format=True)
    if trailer:
        with path.open("ab") as fh:
            fh.write(trailer)
    return path


def _header_file(out: Path, t: _Tokens, probes: ProbeSet) -> None:
    ds = _base(101, t)
    for add in (_patient_probes, _study_probes, _free_text_probes, _code_probes,
                _private_probes, _overlay_curve_probes, _file_meta_probes):
        add(ds, t)
    # Elements pydicom refuses to write in the body, appended as raw bytes: a group
    # 0002 element after the pixel data, then the data set trailing padding.
    trailer = (_element_bytes(0x0002, 0x0017, "AE", t.text("body (0002,0017)").encode())
               + _element_bytes(0xFFFC, 0xFFFC, "OB", t.text("trailing padding").encode()))
    name = f"{t.text('file name')}_header.dcm"
    probes.files.append(_write(ds, out / name, trailer))
    probes.expected[name] = ("imported", "")


def _jpeg_comment_file(out: Path, t: _Tokens, probes: ProbeSet) -> None:
    """8-bit JPEG baseline pixel data whose code stream carries a COM segment."""
    ds = _base(102, t)
    pixels = (np.random.default_rng(102).random((SIDE, SIDE)) * 255).astype(np.uint8)
    ok, jpeg = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not ok:  # pragma: no cover - OpenCV always encodes a uint8 array
        raise RuntimeError("OpenCV could not encode a JPEG")
    comment = f"patient {t.text('JPEG COM segment in pixel data')}".encode()
    stream = jpeg.tobytes()
    stream = stream[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + stream[2:]
    for kw in ("WindowCenter", "WindowWidth", "WindowCenterWidthExplanation", "VOILUTSequence"):
        if kw in ds:
            del ds[kw]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.LossyImageCompression = "01"
    ds.PixelData = encapsulate([stream])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    name = "jpeg_comment.dcm"
    probes.files.append(_write(ds, out / name))
    probes.expected[name] = ("imported", "")


def _refused_file(out: Path, t: _Tokens, probes: ProbeSet, name: str, seed: int,
                  change: Callable[[Dataset, _Tokens], None], reasons: tuple[str, ...]) -> None:
    """A file ingest must refuse, with a probe where the refusal message could echo it."""
    ds = _base(seed, t)
    ds.PatientName = t.text(f"{name} PatientName")
    change(ds, t)
    probes.files.append(_write(ds, out / name))
    probes.expected[name] = ("quarantined", "|".join(reasons))


def _modality(ds: Dataset, t: _Tokens) -> None:
    ds.Modality = t.text("Modality (echo in not_radiograph)")


def _photometric(ds: Dataset, t: _Tokens) -> None:
    ds.PhotometricInterpretation = t.text("PhotometricInterpretation (echo)")


def _syntax(ds: Dataset, t: _Tokens) -> None:
    ds.file_meta.TransferSyntaxUID = t.uid("TransferSyntaxUID (echo)")


def _charset_file(out: Path, t: _Tokens, probes: ProbeSet) -> None:
    """An unknown Specific Character Set: pydicom warns, quoting it."""
    ds = _base(107, t)
    ds.SpecificCharacterSet = t.text("SpecificCharacterSet (pydicom warning)")
    name = "charset.dcm"
    with warnings.catch_warnings():  # pydicom warns while encoding it: expected here
        warnings.simplefilter("ignore")
        probes.files.append(_write(ds, out / name))
    probes.expected[name] = ("imported", "")


def _burned_in_unknown(ds: Dataset, t: _Tokens) -> None:
    del ds.BurnedInAnnotation
    ds.ConversionType = "DF"


def write_probe_set(out: Path) -> ProbeSet:
    """Write the probe set into ``out`` and return its files, probes and expected fates."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    probes = ProbeSet()
    t = _Tokens(probes.probes)
    _header_file(out, t, probes)
    _jpeg_comment_file(out, t, probes)
    _charset_file(out, t, probes)
    _refused_file(out, t, probes, "modality.dcm", 103, _modality, ("not_radiograph",))
    _refused_file(out, t, probes, "photometric.dcm", 104, _photometric,
                  ("unsupported_photometric",))
    _refused_file(out, t, probes, "syntax.dcm", 105, _syntax,
                  ("unsupported_transfer_syntax", "pixel_decode_failed", "unreadable_dicom"))
    _refused_file(out, t, probes, "burned_in_unknown.dcm", 106, _burned_in_unknown,
                  ("burned_in_annotation_unknown",))
    return probes
