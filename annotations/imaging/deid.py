"""De-identification per DICOM PS3.15 Annex E, Basic Application Level
Confidentiality Profile, with the "Retain Longitudinal Temporal Information
with Modified Dates" option.

Approach: an allowlist.  The Basic Profile lists several hundred attributes;
rather than chase that list (and miss a vendor's free-text field that carries
a name), every text-like attribute is removed unless it is known to be safe
for a chest radiograph, and then the rules of the profile are applied:

* private tags, overlays (60xx) and curves (50xx) are dropped;
* UIDs are replaced consistently by keyed pseudonym UIDs (same input UID ->
  same output UID), except well-known class / syntax UIDs;
* person names are dropped, PatientName / PatientID become the pseudonym;
* dates are shifted by one per-patient offset; the birth date is removed;
  times are removed;
* PatientIdentityRemoved = YES and the method codes are recorded.

The caller must still check Burned In Annotation: pixels are not inspected.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence

from annotations.imaging import pseudonym

#: UIDs that identify a class, syntax or coding scheme, never an instance.
KEEP_UIDS = {
    "SOPClassUID", "MediaStorageSOPClassUID", "TransferSyntaxUID", "ReferencedSOPClassUID",
    "ImplementationClassUID", "CodingSchemeUID", "ContextGroupExtensionCreatorUID",
    "MappingResourceUID", "PrivateInformationCreatorUID",
}

#: Text-like attributes known to hold no identity in a chest radiograph.
SAFE_TEXT = {
    "ImageType", "SpecificCharacterSet", "Modality", "ConversionType", "Manufacturer",
    "ManufacturerModelName", "BodyPartExamined", "ViewPosition", "ViewCodeSequence",
    "PatientOrientation", "Laterality", "ImageLaterality", "PatientSex",
    "PhotometricInterpretation", "PresentationLUTShape", "RescaleType", "VOILUTFunction",
    "WindowCenterWidthExplanation", "LossyImageCompression", "LossyImageCompressionMethod",
    "BurnedInAnnotation", "PresentationIntentType", "PixelIntensityRelationship",
    "SoftwareVersions", "DetectorType", "Grid", "FilterType", "ExposureControlMode",
    "FocalSpots", "AnodeTargetMaterial", "CodeValue", "CodingSchemeDesignator",
    "CodingSchemeVersion", "CodeMeaning", "PixelSpacingCalibrationType",
    "ImagerPixelSpacing", "PatientPosition", "RecognizableVisualFeatures",
    "QualityControlImage", "LUTExplanation", "PositionerType", "DetectorConfiguration",
    "ScanOptions", "RescaleIntercept", "RescaleSlope",
}

#: Value representations treated as free text or identifiers.
TEXT_VRS = {"AE", "LO", "LT", "SH", "ST", "UT", "UC", "UR", "CS", "AS"}

METHOD = "PS3.15 E Basic Profile; modified dates"
#: DICOM codes (DCM scheme) for the profile and the option applied.
METHOD_CODES = [("113100", "Basic Application Confidentiality Profile"),
                ("113107", "Retain Longitudinal Temporal Information Modified Dates Option")]


@dataclass(frozen=True)
class DeidResult:
    dataset: Dataset
    patient_pseudo_id: str
    study_pseudo_id: str
    image_pseudo_id: str


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


def _clean(ds: Dataset, key: str, days: int) -> None:
    """Apply the profile's rules to ``ds`` in place, recursing into sequences."""
    ds.remove_private_tags()
    for elem in list(ds):
        tag, vr, kw = elem.tag, elem.VR, elem.keyword
        group = tag.group
        if group in (0x0002,):
            continue
        if 0x5000 <= group <= 0x50FF or 0x6000 <= group <= 0x60FF:
            del ds[tag]
        elif vr == "SQ":
            if kw in SAFE_TEXT or kw.endswith("CodeSequence") or kw in _SAFE_SEQUENCES:
                for item in elem.value:
                    _clean(item, key, days)
            else:
                del ds[tag]
        elif vr == "UI":
            if kw not in KEEP_UIDS and elem.value:
                values = elem.value if elem.VM > 1 else [elem.value]
                new = [pseudonym.pseudo_uid(key, str(v)) for v in values]
                elem.value = new if elem.VM > 1 else new[0]
        elif vr == "PN":
            del ds[tag]
        elif vr == "DA":
            if kw == "PatientBirthDate" or not elem.value:
                del ds[tag]
            else:
                elem.value = _shift_da(str(elem.value), days)
        elif vr == "DT":
            elem.value = _shift_dt(str(elem.value), days) if elem.value else ""
        elif vr == "TM":
            del ds[tag]
        elif vr in TEXT_VRS and kw not in SAFE_TEXT:
            del ds[tag]
        elif vr in ("OB", "OW", "OF", "OD", "OL", "OV", "UN") and kw != "PixelData":
            if kw not in ("LUTData", "RedPaletteColorLookupTableData"):
                del ds[tag]


#: Sequences whose items are needed to display the image and hold no identity.
_SAFE_SEQUENCES = {"VOILUTSequence", "ModalityLUTSequence", "PixelMeasuresSequence",
                   "DeidentificationMethodCodeSequence"}


def deidentify(source: Dataset, *, key: str) -> DeidResult:
    """De-identify ``source`` IN PLACE and return it with its pseudonymous ids.

    In place because the caller (ingest) owns a freshly read dataset and a copy
    of a 10 MB pixel array per file would cost throughput for nothing; callers
    that need the original must ``copy.deepcopy`` first.  ``key`` is the
    platform's pseudonym key.
    """
    patient_ref = str(source.get("PatientID", "") or "") or str(source.get("StudyInstanceUID", ""))
    study_ref = str(source.get("StudyInstanceUID", "")) or str(source.get("SOPInstanceUID", ""))
    instance_ref = str(source.get("SOPInstanceUID", ""))
    patient = pseudonym.pseudo_id(key, "patient", patient_ref, prefix="PAT-")
    study = pseudonym.pseudo_id(key, "study", study_ref, prefix="STU-")
    image = pseudonym.pseudo_id(key, "instance", instance_ref, prefix="IMG-")
    days = pseudonym.day_shift(key, patient_ref)

    meta = getattr(source, "file_meta", None)
    ds = source
    _clean(ds, key, days)

    ds.PatientName = patient
    ds.PatientID = patient
    ds.PatientBirthDate = ""
    ds.AccessionNumber = ""
    ds.StudyID = ""
    ds.ReferringPhysicianName = ""
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = METHOD
    codes = []
    for value, meaning in METHOD_CODES:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
        codes.append(item)
    ds.DeidentificationMethodCodeSequence = Sequence(codes)
    ds.LongitudinalTemporalInformationModified = "MODIFIED"

    if meta is not None:
        new_meta = FileMetaDataset()
        for kw in ("MediaStorageSOPClassUID", "TransferSyntaxUID", "ImplementationClassUID"):
            if kw in meta:
                setattr(new_meta, kw, meta[kw].value)
        if "SOPInstanceUID" in ds:
            new_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta = new_meta
    return DeidResult(ds, patient, study, image)

