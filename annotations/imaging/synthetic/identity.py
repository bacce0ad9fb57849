"""Fake but realistic patient and study identities (the PHI de-identification must remove).

Values look like what a hospital PACS exports (``DOE^JANE``, accession
numbers, addresses, private vendor tags carrying the name) so that the
de-identification code is tested on the shapes it will meet.  Everything
comes from ``rng`` and seeded UID entropy, so a seed reproduces every byte.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
from pydicom.uid import generate_uid

FAMILY = ["DOE", "SMITH", "NGUYEN", "GARCIA", "MUELLER", "ROSSI", "KOWALSKI", "TANAKA",
          "OKAFOR", "JOHANSSON", "DUBOIS", "PATEL", "SILVA", "BROWN", "MARTIN", "KIM"]
GIVEN_F = ["JANE", "MARIA", "ANNA", "LINH", "SOFIA", "AIKO", "GRACE", "EMMA"]
GIVEN_M = ["JOHN", "MINH", "CARLOS", "LUCA", "PIOTR", "KENJI", "DAVID", "OMAR"]
INSTITUTIONS = [
    ("NORTHFIELD GENERAL HOSPITAL", "12 Harbour Road, Northfield NF1 2AB"),
    ("ST. AGATHA MEDICAL CENTER", "400 Lake Street, Springdale, SD 55012"),
    ("RIVERSIDE CHEST CLINIC", "7 Quai des Fleurs, 69002 Lyon"),
    ("CITY HOSPITAL NO. 3", "88 Tran Hung Dao, District 5, Ho Chi Minh City"),
]
STREETS = ["Elm Street", "Station Road", "Maple Avenue", "Rue Victor Hugo", "Le Loi"]

#: Private block written into every file: the creator string and the elements it owns.
PRIVATE_GROUP = 0x0009
PRIVATE_CREATOR = "ACME 1.0"

#: Identity keys that are demographics rather than identifiers (short values such as
#: "F" or "045Y"); substring checks for leaked PHI should skip them.
DEMOGRAPHIC_KEYS = frozenset({"PatientSex", "PatientAge"})


def _uid(seed: int, index: int, what: str) -> str:
    return str(generate_uid(entropy_srcs=["cxr-synthetic", str(seed), str(index), what]))


def _date(d: dt.date) -> str:
    return d.strftime("%Y%m%d")


def make_patient(rng: np.random.Generator) -> dict[str, str]:
    """The patient part of an identity (shared by all studies of one patient)."""
    sex = "F" if rng.random() < 0.5 else "M"
    given = (GIVEN_F if sex == "F" else GIVEN_M)[int(rng.integers(8))]
    family = FAMILY[int(rng.integers(len(FAMILY)))]
    middle = chr(ord("A") + int(rng.integers(26)))
    birth = dt.date(1935, 1, 1) + dt.timedelta(days=int(rng.integers(0, 365 * 70)))
    return {
        "PatientName": f"{family}^{given}^{middle}",
        "PatientID": f"PID{int(rng.integers(10**6, 10**7))}",
        "OtherPatientIDs": f"MRN-{int(rng.integers(10**7, 10**8))}",
        "PatientBirthDate": _date(birth),
        "PatientSex": sex,
        "PatientAddress": f"{int(rng.integers(1, 300))} {STREETS[int(rng.integers(5))]}",
        "PatientTelephoneNumbers": f"+1-555-{int(rng.integers(1000, 9999))}",
    }


def make_identity(rng: np.random.Generator, seed: int, index: int,
                  patient: dict[str, str] | None = None,
                  not_before: dt.date | None = None) -> dict[str, str]:
    """A full identity for image ``index``: patient, study, equipment, UIDs, private tags.

    ``patient`` reuses an earlier patient (a follow-up study); ``not_before``
    then makes the new study date later than the earlier one.
    """
    pat = dict(patient) if patient is not None else make_patient(rng)
    start = not_before + dt.timedelta(days=30) if not_before else dt.date(2016, 1, 1)
    study_day = start + dt.timedelta(days=int(rng.integers(0, 365 * 2)))
    birth = dt.datetime.strptime(pat["PatientBirthDate"], "%Y%m%d").date()
    age = study_day.year - birth.year - ((study_day.month, study_day.day) < (birth.month,
                                                                          birth.day))
    hh, mm, ss = int(rng.integers(7, 20)), int(rng.integers(60)), int(rng.integers(60))
    # with microseconds (no random draw: the other values stay what the seed made them),
    # so a probe for a leaked time cannot meet six digits of a timestamp by chance
    time = f"{hh:02d}{mm:02d}{ss:02d}.{(seed * 1_000_003 + index * 7_919) % 10**6:06d}"
    inst, addr = INSTITUTIONS[int(rng.integers(len(INSTITUTIONS)))]
    ref = f"{FAMILY[int(rng.integers(len(FAMILY)))]}^{GIVEN_M[int(rng.integers(8))]}^^DR"
    op = f"{FAMILY[int(rng.integers(len(FAMILY)))]}^{GIVEN_F[int(rng.integers(8))]}"
    ident = {
        **pat,
        "PatientAge": f"{age:03d}Y",
        "InstitutionName": inst,
        "InstitutionAddress": addr,
        "InstitutionalDepartmentName": "RADIOLOGY",
        "ReferringPhysicianName": ref,
        "OperatorsName": op,
        "StationName": f"XR{int(rng.integers(1, 9))}-{inst.split()[0][:6]}",
        "DeviceSerialNumber": f"SN{int(rng.integers(10**5, 10**6))}",
        "AccessionNumber": f"ACC{int(rng.integers(10**8, 10**9))}",
        "StudyID": f"{int(rng.integers(10**4, 10**5))}",
        "StudyDate": _date(study_day),
        "SeriesDate": _date(study_day),
        "AcquisitionDate": _date(study_day),
        "ContentDate": _date(study_day),
        "StudyTime": time,
        "SeriesTime": time,
        "AcquisitionTime": time,
        "ContentTime": time,
        "StudyInstanceUID": _uid(seed, index, "study"),
        "SeriesInstanceUID": _uid(seed, index, "series"),
        "SOPInstanceUID": _uid(seed, index, "sop"),
        # Private vendor tags that carry identity (group 0009, creator "ACME 1.0").
        "Private_0009_1001": f"PAT:{pat['PatientName']}",
        "Private_0009_1002": f"{pat['PatientID']}/{inst}",
    }
    return ident
