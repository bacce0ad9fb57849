"""The Annex E Basic Profile table, walked row by row, and the options around it."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import pydicom
import pytest
from pydicom.datadict import dictionary_has_tag, dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from annotations.errors import DomainError
from annotations.imaging import deid
from annotations.imaging.deid import deidentify
from annotations.imaging.deid_profile import (
    BASIC_CODES,
    RETAIN_PATIENT_CHARACTERISTICS,
    Action,
    Options,
    basic_profile,
    option_code,
    parse_table,
    resolve,
)
from annotations.imaging.loader import Limits, load_file
from annotations.imaging.synthetic.phi_probes import write_probe_set
from tests.imaging.test_deid import KEY, make_phi_dataset

TABLE = basic_profile()
#: Values to write per VR; text gets a unique token per row (see _token).
NUMERIC = {"US": 7, "SS": 7, "UL": 7, "SL": 7, "FL": 7.5, "FD": 7.5, "SV": 7, "UV": 7}
DATES = {"DA": "20200105", "DT": "20200105101530", "TM": "101530"}


def _vr(tag: int) -> str:
    """The dictionary VR (the first of two); rows newer than pydicom's dictionary: LO."""
    return dictionary_VR(tag).split(" or ")[0] if dictionary_has_tag(tag) else "LO"


def _token(n: int) -> str:
    return f"QROW{n:04d}"


def _fill(ds: Dataset) -> dict[int, str]:
    """Every exact row of the table as an element of ``ds``; returns tag -> token."""
    tokens = {}
    for n, tag in enumerate(sorted(TABLE.codes)):
        if tag >> 16 in (0x0000, 0x0002):
            continue  # command and file-meta groups: removed outright, tested apart
        vr, token = _vr(tag), _token(n)
        if vr in ("AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT", "UR"):
            value: object = token
        elif vr == "UI":
            value = f"1.2.826.0.1.3680043.8.498.77.{1000 + n}"
            token = value
        elif vr in ("OB", "OW", "UN"):
            value = token.encode()
        elif vr == "SQ":
            item = Dataset()
            item.PatientName = token
            value = Sequence([item])
        elif vr in DATES:
            value, token = DATES[vr], ""
        elif vr in ("DS", "IS"):
            value, token = str(900000 + n), str(900000 + n)
        elif vr == "AS":
            value, token = "062Y", ""
        elif vr in NUMERIC:
            value, token = NUMERIC[vr], ""
        else:
            continue
        ds.add_new(tag, vr, value)
        if token:
            tokens[tag] = token
    return tokens


def _written(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_table_comes_from_the_package_with_every_code_of_the_basic_profile():
    counts = Counter(TABLE.codes.values())
    assert len(TABLE) > 600  # the 2026c edition lists 655 rows
    assert set(counts) == BASIC_CODES  # D Z X U Z/D X/Z X/D X/Z/D X/Z/U*
    assert counts["X"] > counts["U"] > 40
    patient = {kw: TABLE.code_for(tag_for_keyword(kw)) for kw in (
        "PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDsSequence",
        "InstitutionCodeSequence", "PersonIdentificationCodeSequence", "StudyInstanceUID")}
    assert patient == {"PatientName": "Z", "PatientID": "Z/D", "PatientBirthDate": "Z",
                       "OtherPatientIDsSequence": "X", "InstitutionCodeSequence": "X/Z/D",
                       "PersonIdentificationCodeSequence": "D", "StudyInstanceUID": "U"}
    # repeating-group rows (curves, overlays) match the whole group family
    assert TABLE.code_for(0x60023000) == "X" and TABLE.code_for(0x501E0000) == "X"


def test_every_row_resolves_to_one_action_with_and_without_options():
    for tag, code in TABLE.codes.items():
        vr = _vr(tag)
        for options in (Options(), Options(retain_patient_characteristics=True)):
            action = resolve(option_code(tag, vr, code, options), vr=vr)
            assert isinstance(action, Action)
            if vr in ("DA", "DT") and tag not in (0x00100030,):
                assert action is Action.CLEAN, keyword_for_tag(tag)


def test_every_row_is_applied_at_the_top_level_and_inside_sequences():
    ds = make_phi_dataset()
    tokens = _fill(ds)
    nested = Dataset()  # the same rows inside a sequence the table does not list
    nested_tokens = _fill(nested)
    ds.AnatomicRegionSequence = Sequence([nested])
    out = deidentify(ds, key=KEY).dataset
    raw = _written(out)
    left = [keyword_for_tag(t) or hex(t) for t, v in {**tokens, **nested_tokens}.items()
            if v.encode() in raw]
    assert left == []
    kept_nested = out.AnatomicRegionSequence[0]
    for container in (out, kept_nested):
        for tag, code in TABLE.codes.items():
            if tag >> 16 in (0, 2) or tag not in tokens:
                continue
            action = resolve(option_code(tag, _vr(tag), code, Options()), vr=_vr(tag))
            if action is Action.REMOVE:
                assert tag not in container, keyword_for_tag(tag)
            elif action is Action.EMPTY and container is kept_nested:
                assert not container[tag].value, keyword_for_tag(tag)
            elif action is Action.UID:
                assert container[tag].value.startswith("2.25."), keyword_for_tag(tag)


def test_dates_in_table_rows_shift_by_the_patient_offset_and_birth_date_goes():
    ds = make_phi_dataset()
    ds.InstanceCreationDate = "20200110"  # X/D in the table: C under the option
    ds.PatientBirthTime = "101010"
    out = deidentify(ds, key=KEY).dataset
    assert out.InstanceCreationDate not in ("", "20200110")
    assert out.StudyDate < "20200105" and not out.PatientBirthDate
    assert "PatientBirthTime" not in out


@pytest.mark.parametrize("retain", [False, True])
def test_patient_characteristics_are_kept_only_where_the_project_says_so(retain):
    ds = make_phi_dataset()
    ds.PatientWeight, ds.PatientSize, ds.SmokingStatus = "61.5", "1.72", "NO"
    ds.Allergies = "penicillin (told by daughter ERIKA)"
    out = deidentify(ds, key=KEY, retain_patient_characteristics=retain).dataset
    kept = {kw: str(out.get(kw, "") or "") for kw in (
        "PatientSex", "PatientAge", "PatientWeight", "PatientSize", "SmokingStatus")}
    if retain:
        assert kept == {"PatientSex": "F", "PatientAge": "062Y", "PatientWeight": "61.5",
                        "PatientSize": "1.72", "SmokingStatus": "NO"}
        assert "113108" in [c.CodeValue for c in out.DeidentificationMethodCodeSequence]
    else:
        assert set(kept.values()) == {""}
        assert len(out.DeidentificationMethodCodeSequence) == 2
    assert "Allergies" not in out  # C in the option column: free text nobody cleans here


def test_option_rows_are_rows_of_the_table():
    assert set(RETAIN_PATIENT_CHARACTERISTICS) <= set(TABLE.codes)


def test_allowlist_never_overrides_the_table():
    listed = {kw for kw in deid.SAFE_TEXT | deid.CODE_TEXT | deid.KEEP_UIDS
              if TABLE.code_for(tag_for_keyword(kw)) is not None}
    assert listed == set()


def test_unlisted_text_uids_and_local_codes_do_not_survive():
    ds = make_phi_dataset()
    ds.DetectorDescription = "panel bought for Dr HOUSE"  # LT, not in the table
    ds.CreatorVersionUID = "1.2.826.0.1.3680043.8.498.55"
    ds.SpecificCharacterSet = "ZZ HOSPITAL"  # not a term of the standard
    view = Dataset()
    view.CodeValue, view.CodingSchemeDesignator = "R-10214", "SRT"
    view.CodeMeaning = "postero-anterior, patient ERIKA"
    local = Dataset()
    local.CodeValue, local.CodingSchemeDesignator, local.CodeMeaning = "MRN99812", "99HOSP", "x"
    view.ViewModifierCodeSequence = Sequence([local])
    ds.ViewCodeSequence = Sequence([view])
    out = deidentify(ds, key=KEY).dataset
    raw = _written(out)
    for value in ("HOUSE", "8.498.55", "ZZ HOSPITAL", "ERIKA", "MRN99812", "99HOSP"):
        assert value.encode() not in raw, value
    code = out.ViewCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator) == ("R-10214", "SRT")
    assert out.SOPClassUID == "1.2.840.10008.5.1.4.1.1.1"  # a registered class UID stays


def test_group_0002_is_rebuilt_and_the_preamble_zeroed():
    ds = make_phi_dataset()
    ds.file_meta.SendingApplicationEntityTitle = "ST_ELSEWHERE"
    ds.file_meta.PrivateInformationCreatorUID = "1.2.826.0.1.3680043.8.498.66"
    ds.file_meta.PrivateInformation = b"ERIKA MUSTERMANN"
    ds.add_new(0x00020017, "AE", "BODY_AE_TITLE")  # a meta element in the body
    ds.preamble = b"MUSTERMANN".ljust(128, b"\x00")
    out = deidentify(ds, key=KEY).dataset
    raw = _written(out)
    assert raw[:128] == b"\x00" * 128 and raw[128:132] == b"DICM"
    meta = pydicom.dcmread(io.BytesIO(raw)).file_meta
    assert sorted(e.keyword for e in meta) == sorted([
        "FileMetaInformationGroupLength", "FileMetaInformationVersion",
        "MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID", "TransferSyntaxUID",
        "ImplementationClassUID", "ImplementationVersionName"])
    assert not [e for e in out if e.tag.group == 2]
    for value in ("ST_ELSEWHERE", "8.498.66", "MUSTERMANN", "BODY_AE_TITLE"):
        assert value.encode() not in raw, value


def test_parse_table_refuses_an_ambiguous_or_incomplete_table():
    lists = ["D_TAGS", "Z_TAGS", "X_TAGS", "U_TAGS", "Z_D_TAGS", "X_Z_TAGS", "X_D_TAGS",
             "X_Z_D_TAGS", "X_Z_U_STAR_TAGS"]
    source = "\n".join(f"{name} = []" for name in lists)
    assert len(parse_table(source)) == 0
    with pytest.raises(DomainError, match="listed twice"):
        parse_table(source + "\nX_TAGS = [(0x0010, 0x0010)]\nZ_TAGS = [(0x0010, 0x0010)]")
    with pytest.raises(DomainError, match="no list"):
        parse_table("D_TAGS = []")


def test_probe_set_leaves_no_probe_in_the_deidentified_files(tmp_path: Path):
    """The pure half of the PHI probe test: load and de-identify every accepted file."""
    probes = write_probe_set(tmp_path)
    accepted = 0
    for path in probes.files:
        status, _ = probes.expected[path.name]
        if status != "imported":
            continue
        loaded = load_file(path, Limits())
        raw = _written(deidentify(loaded.dataset, key=KEY, pixels=loaded.pixels).dataset)
        assert [p for p in probes.probes if p.encode() in raw] == [], path.name
        back = pydicom.dcmread(io.BytesIO(raw))
        assert back.pixel_array.shape == loaded.pixels.shape
        assert (back.pixel_array == loaded.pixels).all()
        accepted += 1
    assert accepted == 3
