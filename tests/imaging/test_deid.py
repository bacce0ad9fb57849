"""De-identification: identity gone, pseudonyms stable, image still displayable."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from annotations.imaging.deid import deidentify

KEY = "test-pseudonym-key"
PHI = {
    "PatientName": "MUSTERMANN^ERIKA",
    "PatientID": "MRN-99812",
    "PatientBirthDate": "19571203",
    "InstitutionName": "St. Elsewhere General",
    "InstitutionAddress": "1 Hospital Road, Springfield",
    "AccessionNumber": "ACC-55123",
    "ReferringPhysicianName": "HOUSE^GREGORY",
    "OperatorsName": "TECH^TOM",
    "StationName": "XR-ROOM-3",
    "StudyID": "ST-7781",
    "DeviceSerialNumber": "SN-000777",
    "OtherPatientIDs": "OLD-1234",
    "PatientAddress": "42 Elm Street",
    "StudyDescription": "CHEST PA ERIKA FOLLOWUP",
    "ImageComments": "pt Erika Mustermann, bed 4",
}
UIDS = {
    "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.11",
    "SeriesInstanceUID": "1.2.826.0.1.3680043.8.498.12",
    "SOPInstanceUID": "1.2.826.0.1.3680043.8.498.13",
    "FrameOfReferenceUID": "1.2.826.0.1.3680043.8.498.14",
}


def make_phi_dataset(**overrides) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    ds.file_meta.MediaStorageSOPInstanceUID = UIDS["SOPInstanceUID"]
    ds.file_meta.SourceApplicationEntityTitle = "HOSPITAL_PACS"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    for k, v in {**PHI, **UIDS, **overrides}.items():
        setattr(ds, k, v)
    ds.StudyDate, ds.SeriesDate, ds.StudyTime = "20200105", "20200105", "101530"
    ds.AcquisitionDateTime = "20200105101530"
    ds.PatientSex, ds.PatientAge = "F", "062Y"
    ds.Modality, ds.ViewPosition, ds.Manufacturer = "CR", "PA", "ACME Imaging"
    ds.Rows, ds.Columns = 64, 48
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation, ds.SamplesPerPixel = 0, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.PixelData = (np.arange(64 * 48, dtype=np.uint16) % 4096).tobytes()
    req = Dataset()
    req.RequestingPhysician = "WELBY^MARCUS"
    req.RequestedProcedureID = "RP-1"
    ds.RequestAttributesSequence = Sequence([req])
    ref = Dataset()
    ref.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    ref.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.99"
    ds.ReferencedImageSequence = Sequence([ref])
    ds.add_new((0x0029, 0x0010), "LO", "ACME 1.0")
    ds.add_new((0x0029, 0x1001), "LO", "MUSTERMANN ERIKA")
    ds.add_new((0x6000, 0x0010), "US", 64)
    return ds


def _bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_identity_is_gone_from_the_written_file():
    out = deidentify(make_phi_dataset(), key=KEY)
    raw = _bytes(out.dataset)
    for value in [*PHI.values(), *UIDS.values(), "WELBY", "HOSPITAL_PACS", "19571203",
                  "1.2.826.0.1.3680043.8.498.99", "101530", "Erika", "ERIKA"]:
        assert value.encode() not in raw, value
    back = pydicom.dcmread(io.BytesIO(raw))
    assert back.PatientIdentityRemoved == "YES"
    assert [c.CodeValue for c in back.DeidentificationMethodCodeSequence] == ["113100", "113107"]
    assert back.PatientName == out.patient_pseudo_id == back.PatientID
    assert "PatientBirthDate" not in back or back.PatientBirthDate == ""
    assert not any(e.tag.is_private for e in back.iterall())
    assert (0x6000, 0x0010) not in back


def test_display_attributes_survive():
    back = pydicom.dcmread(io.BytesIO(_bytes(deidentify(make_phi_dataset(), key=KEY).dataset)))
    assert (back.Modality, back.ViewPosition) == ("CR", "PA")
    # Patient's Sex is Z in the Basic Profile: kept only with the option (test_deid_profile)
    assert back.get("PatientSex", "") == ""
    assert back.PhotometricInterpretation == "MONOCHROME2"
    assert float(back.WindowCenter) == 2048
    assert back.SOPClassUID == "1.2.840.10008.5.1.4.1.1.1"
    assert back.pixel_array.shape == (64, 48)
    # references to other instances are not needed to read one radiograph: removed
    assert "ReferencedImageSequence" not in back and "RequestAttributesSequence" not in back


def test_uids_replaced_consistently_and_validly():
    a = deidentify(make_phi_dataset(), key=KEY).dataset
    b = deidentify(make_phi_dataset(), key=KEY).dataset
    c = deidentify(make_phi_dataset(), key="another-key").dataset
    for kw in UIDS:
        assert a[kw].value == b[kw].value != c[kw].value
        assert a[kw].value.startswith("2.25.") and len(a[kw].value) <= 64
    assert a.file_meta.MediaStorageSOPInstanceUID == a.SOPInstanceUID


def test_pseudonyms_stable_and_patient_scoped():
    first = deidentify(make_phi_dataset(), key=KEY)
    again = deidentify(make_phi_dataset(), key=KEY)
    other_image = deidentify(make_phi_dataset(SOPInstanceUID="1.2.3.4.5.6"), key=KEY)
    other_patient = deidentify(make_phi_dataset(PatientID="MRN-1"), key=KEY)
    assert (first.patient_pseudo_id, first.study_pseudo_id, first.image_pseudo_id) == (
        again.patient_pseudo_id, again.study_pseudo_id, again.image_pseudo_id)
    assert other_image.patient_pseudo_id == first.patient_pseudo_id
    assert other_image.image_pseudo_id != first.image_pseudo_id
    assert other_patient.patient_pseudo_id != first.patient_pseudo_id


def test_dates_shift_by_one_offset_per_patient():
    ds = make_phi_dataset()
    ds.SeriesDate = "20200110"
    out = deidentify(ds, key=KEY).dataset
    import datetime as dt

    def d(s: str) -> dt.date:
        return dt.datetime.strptime(s, "%Y%m%d").date()

    assert out.StudyDate != "20200105"
    assert (d(out.SeriesDate) - d(out.StudyDate)).days == 5
    assert not out.get("StudyTime")  # Z: emptied (times are not kept)
    assert out.AcquisitionDateTime.endswith("000000")


@pytest.mark.parametrize("missing", ["PatientID", "StudyInstanceUID"])
def test_missing_identifiers_still_give_pseudonyms(missing):
    ds = make_phi_dataset()
    delattr(ds, missing)
    out = deidentify(ds, key=KEY)
    assert out.patient_pseudo_id.startswith("PAT-") and out.image_pseudo_id.startswith("IMG-")
