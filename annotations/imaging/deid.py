"""De-identification per DICOM PS3.15 Annex E: the Basic Application Level
Confidentiality Profile with the "Retain Longitudinal Temporal Information
with Modified Dates" option and, per project, "Retain Patient
Characteristics".

Every element, at every depth of every sequence, goes through one decision:

1. Removed outright, whatever the table says: private elements (and their
   creators), group 0000 and group 0002 elements found in the dataset body,
   curves (50xx), overlays (60xx) and retired variable pixel data (7Fxx).
2. Listed in the profile's table (:mod:`annotations.imaging.deid_profile`,
   the standard's own rows): the row's action, after the options.
3. Not listed: a second safety net, by value representation.  The table names
   the standard attributes known to carry identity; it cannot name an
   attribute a vendor misuses for free text, an attribute newer than the table,
   or a retired one.  A chest radiograph needs only a few dozen attributes to
   be displayed and trained on, so unlisted *text* (and names, and opaque
   binary) is dropped unless it is on :data:`SAFE_TEXT`, and unlisted UIDs
   are replaced unless they name a class or syntax.  Dropping an attribute the
   platform never reads costs nothing; keeping one that names a patient costs
   the promise.  Code items keep their code only when it comes from a public
   coding scheme, and never their free-text Code Meaning.

Then group 0002 is rebuilt from scratch, the preamble is zeroed, and pixel
data that was encapsulated (JPEG, JPEG 2000, RLE: streams that carry their own
comment and application segments) is stored natively from the decoded pixels.

Pixels are not inspected: burned-in text is the loader's decision
(:mod:`annotations.imaging.burned_in`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pydicom
from pydicom.charset import python_encoding
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian

from annotations.imaging import pseudonym
from annotations.imaging.deid_profile import Action, Options, basic_profile, option_code, resolve

#: UIDs that identify a class, syntax or coding scheme, never an instance.
KEEP_UIDS = frozenset({
    "SOPClassUID", "ReferencedSOPClassUID", "CodingSchemeUID", "MappingResourceUID",
    "ContextGroupExtensionCreatorUID", "PrivateInformationCreatorUID",
    "RelatedGeneralSOPClassUID", "OriginalSpecializedSOPClassUID",
})

#: Unlisted text attributes known to hold no identity in a chest radiograph and
#: needed (or useful) to display it.  None of them is in the profile's table
#: (a test checks): the allowlist never overrides the standard.
SAFE_TEXT = frozenset({
    "SpecificCharacterSet", "ImageType", "Modality", "ConversionType", "Manufacturer",
    "ManufacturerModelName", "BodyPartExamined", "ViewPosition", "PatientOrientation",
    "Laterality", "ImageLaterality", "PhotometricInterpretation", "PresentationLUTShape",
    "RescaleType", "VOILUTFunction", "WindowCenterWidthExplanation", "LUTExplanation",
    "LossyImageCompression", "LossyImageCompressionMethod", "BurnedInAnnotation",
    "RecognizableVisualFeatures", "PresentationIntentType", "PixelIntensityRelationship",
    "DetectorType", "DetectorConfiguration", "Grid", "FilterType", "ExposureControlMode",
    "AnodeTargetMaterial", "PixelSpacingCalibrationType", "PatientPosition",
    "PositionerType", "QualityControlImage", "ScanOptions", "PatientIdentityRemoved",
    "LongitudinalTemporalInformationModified",
})

#: Allowlisted attributes whose values must also be terms of the standard: a
#: value outside the list is the file's own text and is dropped with it.
SAFE_TEXT_TERMS: dict[str, frozenset[str]] = {
    "SpecificCharacterSet": frozenset(python_encoding),
}

#: The code of a code item; kept only when its scheme is public (below).
CODE_TEXT = frozenset({"CodeValue", "CodingSchemeDesignator", "CodingSchemeVersion",
                       "LongCodeValue", "URNCodeValue"})
#: Coding schemes whose codes name concepts, never a person or a site (PS3.16 8).
PUBLIC_CODING_SCHEMES = frozenset({"DCM", "SCT", "SRT", "LN", "UCUM", "RADLEX", "FMA",
                                   "NCIt", "I10", "ICD10", "UMLS", "MDNS", "ACR"})

#: Text-like value representations (names included).
TEXT_VRS = frozenset({"AE", "AS", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
#: Opaque binary value representations.
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
#: Binary elements kept when unlisted: the image itself (top level only: a
#: nested Pixel Data is an icon, which may show anything) and lookup tables.
TOP_LEVEL_BINARY = frozenset({"PixelData"})
NESTED_BINARY = frozenset({"LUTData"})

METHOD = "PS3.15 E Basic Profile; modified dates"
METHOD_PATIENT_CHARACTERISTICS = "; patient characteristics"
#: DICOM codes (DCM scheme, CID 7050) for the profile and the options applied.
BASIC_CODE = ("113100", "Basic Application Confidentiality Profile")
MODIFIED_DATES_CODE = ("113107", "Retain Longitudinal Temporal Information Modified Dates "
                       "Option")
PATIENT_CHARACTERISTICS_CODE = ("113108", "Retain Patient Characteristics Option")

#: A dummy value per VR for ``D`` (non-empty, of the right form, saying nothing).
DUMMY_BY_VR: dict[str, object] = {
    "AE": "ANONYMOUS", "CS": "ANONYMOUS", "LO": "ANONYMOUS", "LT": "ANONYMOUS",
    "PN": "ANONYMOUS", "SH": "ANONYMOUS", "ST": "ANONYMOUS", "UC": "ANONYMOUS",
    "UT": "ANONYMOUS", "UR": "ANONYMOUS", "AS": "000Y", "DA": "19000101",
    "DT": "19000101000000", "TM": "000000", "DS": "0", "IS": "0", "FL": 0.0, "FD": 0.0,
    "SL": 0, "SS": 0, "SV": 0, "UL": 0, "US": 0, "UV": 0,
    "OB": b"\x00\x00", "OD": b"\x00" * 8, "OF": b"\x00" * 4, "OL": b"\x00" * 4,
    "OV": b"\x00" * 8, "OW": b"\x00\x00", "UN": b"\x00\x00",
}


@dataclass(frozen=True)
class DeidResult:
    dataset: Dataset
    patient_pseudo_id: str
    study_pseudo_id: str
    image_pseudo_id: str


@dataclass(frozen=True)
class _Context:
    key: str
    days: int
    options: Options


def _shift_da(value: str, days: int) -> str:
    try:
        d = dt.datetime.strptime(value.strip()[:8], "%Y%m%d").date()
    except ValueError:
        return ""
    return (d + dt.timedelta(days=days)).strftime("%Y%m%d")


def _shift_dt(value: str, days: int) -> str:
    """Shift the date part of a DT; its time part is dropped (times are removed)."""
    shifted = _shift_da(value[:8], days)
    return shifted + "000000" if shifted else ""


def _shift(elem: DataElement, days: int) -> None:
    """Clean a DA/DT value by the patient's shift (multi-valued too)."""
    shift = _shift_da if elem.VR == "DA" else _shift_dt
    values = [v for v in (elem.value if elem.VM > 1 else [elem.value]) if v]
    new = [shift(str(v), days) for v in values]
    new = [v for v in new if v]
    elem.value = new if len(new) > 1 else (new[0] if new else "")


def _replace_uids(elem: DataElement, key: str) -> None:
    values = elem.value if elem.VM > 1 else [elem.value]
    new = [pseudonym.pseudo_uid(key, str(v)) for v in values if v]
    elem.value = new if len(new) > 1 else (new[0] if new else "")


def _vrs(elem: DataElement) -> set[str]:
    """The element's VR; both candidates where the dictionary gives two ("US or SS")."""
    return set(str(elem.VR).split(" or "))


def _removed_outright(tag: pydicom.tag.BaseTag) -> bool:
    group = tag.group
    return (
        tag.is_private
        or group in (0x0000, 0x0002)
        or 0x5000 <= group <= 0x50FF
        or 0x6000 <= group <= 0x60FF
        or (0x7F00 <= group <= 0x7FFF and group != 0x7FE0)
    )


def _clean(ds: Dataset, ctx: _Context, depth: int) -> None:
    """Apply the profile to ``ds`` in place, recursing into sequences."""
    table = basic_profile()
    public_code = str(ds.get("CodingSchemeDesignator", "") or "") in PUBLIC_CODING_SCHEMES
    for tag in list(ds.keys()):
        if _removed_outright(tag):
            del ds[tag]
            continue
        elem = ds[tag]
        basic = table.code_for(int(tag))
        if basic is None:
            _safety_net(ds, elem, ctx, depth, public_code)
            continue
        vr = str(elem.VR).split(" or ")[0]
        _apply(ds, elem, resolve(option_code(int(tag), vr, basic, ctx.options), vr=vr), ctx,
               depth)


def _apply(ds: Dataset, elem: DataElement, action: Action, ctx: _Context, depth: int) -> None:
    """Carry out one table action on ``elem``."""
    vr = str(elem.VR).split(" or ")[0]
    if action is Action.REMOVE:
        del ds[elem.tag]
    elif action is Action.EMPTY or (action is Action.DUMMY and vr == "SQ"):
        # A dummy sequence item could only repeat what was there: an empty
        # sequence is the one dummy that provably carries nothing.
        elem.value = Sequence([]) if vr == "SQ" else elem.empty_value
    elif action is Action.DUMMY:
        if vr == "UI":
            _replace_uids(elem, ctx.key)
        elif vr in DUMMY_BY_VR:
            elem.value = DUMMY_BY_VR[vr]
        else:
            del ds[elem.tag]
    elif action is Action.UID:
        if vr == "UI":
            _replace_uids(elem, ctx.key)
        else:  # a U row that arrives with another VR cannot be replaced consistently
            del ds[elem.tag]
    elif action is Action.CLEAN:
        _shift(elem, ctx.days)
    elif action is Action.KEEP and vr == "SQ":
        for item in elem.value:
            _clean(item, ctx, depth + 1)


def _safety_net(ds: Dataset, elem: DataElement, ctx: _Context, depth: int,
                public_code: bool) -> None:
    """An attribute the table does not list: keep only what cannot carry identity."""
    vrs, kw = _vrs(elem), elem.keyword
    if "SQ" in vrs:
        for item in elem.value:
            _clean(item, ctx, depth + 1)
    elif "UI" in vrs:
        if kw not in KEEP_UIDS and not _is_registered_uid(elem):
            _replace_uids(elem, ctx.key)
    elif vrs & {"DA", "DT"}:
        _shift(elem, ctx.days)
    elif "TM" in vrs:
        del ds[elem.tag]
    elif kw in CODE_TEXT:
        if not public_code:
            del ds[elem.tag]
    elif vrs & TEXT_VRS:
        if kw not in SAFE_TEXT or not _known_terms(elem):
            del ds[elem.tag]
    elif vrs & BINARY_VRS:
        allowed = NESTED_BINARY | (TOP_LEVEL_BINARY if depth == 0 else frozenset())
        if kw not in allowed:
            del ds[elem.tag]


def _known_terms(elem: DataElement) -> bool:
    terms = SAFE_TEXT_TERMS.get(elem.keyword)
    if terms is None:
        return True
    values = elem.value if elem.VM > 1 else [elem.value]
    return all(str(v or "") in terms for v in values)


def _is_registered_uid(elem: DataElement) -> bool:
    """Whether every value is a UID the standard registers (classes, syntaxes...)."""
    values = elem.value if elem.VM > 1 else [elem.value]
    return bool(values) and all(v and UID(str(v)).name != str(v) for v in values)


def _store_native(ds: Dataset, pixels: np.ndarray | None) -> bool:
    """Replace encapsulated pixel data by native little-endian values.

    JPEG and JPEG 2000 code streams carry their own comment (COM) and
    application (APPn) segments, in which some devices write the patient's
    name; decoding and storing the values natively drops them, losing
    nothing (a lossy source keeps its Lossy Image Compression attributes).
    Returns whether the transfer syntax must become Explicit VR Little Endian.
    """
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    uid = UID(str(syntax)) if syntax else None
    if "PixelData" not in ds or uid is None or not (uid.is_transfer_syntax
                                                    and uid.is_encapsulated):
        return False
    arr = np.ascontiguousarray(ds.pixel_array if pixels is None else pixels)
    ds.BitsAllocated = arr.dtype.itemsize * 8
    ds.PixelRepresentation = 1 if arr.dtype.kind == "i" else 0
    ds.PixelData = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
    ds["PixelData"].VR = "OB" if arr.dtype.itemsize == 1 else "OW"
    return True


def _method_codes(options: Options) -> Sequence:
    codes = [BASIC_CODE, MODIFIED_DATES_CODE]
    if options.retain_patient_characteristics:
        codes.append(PATIENT_CHARACTERISTICS_CODE)
    items = []
    for value, meaning in codes:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
        items.append(item)
    return Sequence(items)


def _rebuild_file_meta(ds: Dataset, syntax: str | None, key: str, image: str) -> None:
    """Group 0002 from scratch: nothing of the source's meta survives but its syntax."""
    meta = FileMetaDataset()
    if "SOPClassUID" in ds:
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
    if "SOPInstanceUID" not in ds or not ds.SOPInstanceUID:
        ds.SOPInstanceUID = pseudonym.pseudo_uid(key, image)
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = syntax or ExplicitVRLittleEndian
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "CXR_DEID_1"
    ds.file_meta = meta


def deidentify(source: Dataset, *, key: str, retain_patient_characteristics: bool = False,
               pixels: np.ndarray | None = None) -> DeidResult:
    """De-identify ``source`` IN PLACE and return it with its pseudonymous ids.

    In place because the caller (ingest) owns a freshly read dataset and a copy
    of a 10 MB pixel array per file would cost throughput for nothing; callers
    that need the original must ``copy.deepcopy`` first.  ``key`` is the
    platform's pseudonym key; ``pixels``, the already decoded pixel values, if
    the caller has them (saves a second decode of compressed data).
    """
    patient_ref = str(source.get("PatientID", "") or "") or str(source.get("StudyInstanceUID", ""))
    study_ref = str(source.get("StudyInstanceUID", "")) or str(source.get("SOPInstanceUID", ""))
    instance_ref = str(source.get("SOPInstanceUID", ""))
    patient = pseudonym.pseudo_id(key, "patient", patient_ref, prefix="PAT-")
    study = pseudonym.pseudo_id(key, "study", study_ref, prefix="STU-")
    image = pseudonym.pseudo_id(key, "instance", instance_ref, prefix="IMG-")
    options = Options(retain_patient_characteristics=retain_patient_characteristics)
    ctx = _Context(key=key, days=pseudonym.day_shift(key, patient_ref), options=options)

    ds = source
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if _store_native(ds, pixels):
        syntax = ExplicitVRLittleEndian
    _clean(ds, ctx, depth=0)

    ds.PatientName = patient
    ds.PatientID = patient
    ds.PatientBirthDate = ""
    ds.AccessionNumber = ""
    ds.StudyID = ""
    ds.ReferringPhysicianName = ""
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = METHOD + (
        METHOD_PATIENT_CHARACTERISTICS if retain_patient_characteristics else "")
    ds.DeidentificationMethodCodeSequence = _method_codes(options)
    ds.LongitudinalTemporalInformationModified = "MODIFIED"
    ds.preamble = b"\x00" * 128
    _rebuild_file_meta(ds, str(syntax) if syntax else None, key, image)
    return DeidResult(ds, patient, study, image)
