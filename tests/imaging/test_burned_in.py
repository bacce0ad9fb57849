"""Burned-in annotation: refused where the file says so or where text is common."""

from __future__ import annotations

from pathlib import Path

import pytest

from annotations.errors import DomainError
from annotations.imaging.burned_in import REASON_UNKNOWN, REASON_YES, burned_in_refusal
from annotations.imaging.loader import Limits, load_file
from tests.imaging.test_deid import make_phi_dataset

SC = "1.2.840.10008.5.1.4.1.1.7"


def _ds(**attrs):
    ds = make_phi_dataset()
    for key, value in attrs.items():
        if value is None:
            if key in ds:
                delattr(ds, key)
        else:
            setattr(ds, key, value)
    return ds


@pytest.mark.parametrize(("attrs", "reason"), [
    ({"BurnedInAnnotation": "YES"}, REASON_YES),
    ({"BurnedInAnnotation": "NO", "Modality": "US"}, None),
    ({"BurnedInAnnotation": None}, None),  # a CR primary image: usually clean
    ({"BurnedInAnnotation": None, "Modality": "DX"}, None),
    ({"BurnedInAnnotation": None, "Modality": "US"}, REASON_UNKNOWN),
    ({"BurnedInAnnotation": None, "Modality": "XA"}, REASON_UNKNOWN),
    ({"BurnedInAnnotation": None, "Modality": "OT"}, REASON_UNKNOWN),
    ({"BurnedInAnnotation": None, "Modality": "PX"}, REASON_UNKNOWN),
    ({"BurnedInAnnotation": None, "SOPClassUID": SC}, REASON_UNKNOWN),  # SC saying CR
    ({"BurnedInAnnotation": None, "ConversionType": "DF"}, REASON_UNKNOWN),
    ({"BurnedInAnnotation": None, "ImageType": ["DERIVED", "SECONDARY"]}, REASON_UNKNOWN),
    ({"BurnedInAnnotation": "MAYBE", "Modality": "US"}, REASON_UNKNOWN),  # not a statement
])
def test_burned_in_policy(attrs, reason):
    refusal = burned_in_refusal(_ds(**attrs), allow=False)
    assert (refusal[0] if refusal else None) == reason
    assert burned_in_refusal(_ds(**attrs), allow=True) is None


def test_refusal_message_never_quotes_the_file():
    ds = _ds(BurnedInAnnotation=None, Modality="US", ConversionType="MUSTERMANN")
    reason, message = burned_in_refusal(ds, allow=False)
    assert reason == REASON_UNKNOWN and "MUSTERMANN" not in message


def test_loader_quarantines_an_unstated_secondary_capture(tmp_path: Path):
    ds = _ds(BurnedInAnnotation=None, SOPClassUID=SC)
    path = tmp_path / "sc.dcm"
    ds.save_as(path, enforce_file_format=True)
    small = Limits(min_side=16)  # the fixture image is 48x64
    with pytest.raises(DomainError) as exc:
        load_file(path, small)
    assert exc.value.code == REASON_UNKNOWN
    allowed = Limits(min_side=16, allow_burned_in=True)
    assert load_file(path, allowed).dataset is not None
