"""The patient-level train/held-out split of a retraining.

Which patients are held out follows their pseudonyms, so it changes with the
installation's pseudonym key: a project with a handful of final patients can see all
of them bucketed to the held-out side.  That project still trains (on all of them)
instead of failing with "no training data"; with enough patients the split holds and
never separates a patient's images.
"""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

from annotations.services.training import split_by_patient


def _image(patient: str, n: int = 0) -> SimpleNamespace:
    return SimpleNamespace(pk=f"{patient}-{n}", study=SimpleNamespace(patient_pseudo_id=patient))


def _bucket(patient: str) -> float:
    return int.from_bytes(hashlib.sha256(patient.encode()).digest()[:4], "big") / 2**32


def test_every_final_patient_bucketed_to_held_out_still_trains():
    # two patients whose buckets both fall under the held-out fraction
    patients = [p for p in (f"P{i}" for i in range(200)) if _bucket(p) < 0.1][:2]
    assert len(patients) == 2
    images = [_image(p, n) for p in patients for n in range(2)]
    train, val = split_by_patient(images, 0.1)
    assert [i.pk for i in train] == [i.pk for i in images] and val == []


def test_split_keeps_each_patient_on_one_side():
    images = [_image(f"P{i}", n) for i in range(60) for n in range(3)]
    train, val = split_by_patient(images, 0.3)
    assert train and val and len(train) + len(val) == len(images)
    sides = {}
    for side, chosen in (("train", train), ("val", val)):
        for image in chosen:
            sides.setdefault(image.study.patient_pseudo_id, set()).add(side)
    assert all(len(s) == 1 for s in sides.values())
    assert all(_bucket(i.study.patient_pseudo_id) < 0.3 for i in val)


def test_nothing_to_split_gives_nothing():
    assert split_by_patient([], 0.1) == ([], [])
