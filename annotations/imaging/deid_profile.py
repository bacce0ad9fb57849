"""The PS3.15 Annex E Basic Application Level Confidentiality Profile, as data.

The action table (Table E.1-1, "Basic Prof." column) is not typed in here: it
is read from the maintained ``dicom-anonymizer`` package (KitwareMedical),
whose ``dicom_anonymization_databases/dicomfields_2026c.py`` is generated from
the 2026c edition of the standard, one list of tags per action code.  The file
is parsed with ``ast.literal_eval`` and never imported, so none of that
package's anonymisation code runs here: only its table is used.

Action codes (PS3.15 E.1.1):

``D``  replace with a non-empty dummy value of the same VR
``Z``  replace with a zero-length value (or a dummy)
``X``  remove
``K``  keep (only through an option: the Basic Profile column has none)
``C``  clean: replace with a value of similar meaning that carries no identity
``U``  replace a UID with a consistent non-identifying UID
``Z/D``, ``X/Z``, ``X/D``, ``X/Z/D``, ``X/Z/U*``  the choice depends on the
IOD's attribute type; see :func:`resolve` for the one this platform makes.

Two options change the column (PS3.15 E.3):

* *Retain Longitudinal Temporal Information with Modified Dates*
  (always applied): every date in the table is ``C``, cleaned by the caller's
  per-patient shift; birth date and time keep their Basic Profile action, as
  the standard's option column does.
* *Retain Patient Characteristics* (per project, off by default): the rows
  listed in :data:`RETAIN_PATIENT_CHARACTERISTICS`.
"""

from __future__ import annotations

import ast
import enum
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from annotations.errors import DomainError

#: The table edition read from the package (one module per edition).
TABLE_EDITION = "dicomfields_2026c"

#: Lists of the package's table module, by the action code they carry.
TABLE_LISTS: Mapping[str, str] = {
    "D_TAGS": "D", "Z_TAGS": "Z", "X_TAGS": "X", "U_TAGS": "U", "Z_D_TAGS": "Z/D",
    "X_Z_TAGS": "X/Z", "X_D_TAGS": "X/D", "X_Z_D_TAGS": "X/Z/D", "X_Z_U_STAR_TAGS": "X/Z/U*",
}
#: Every code the Basic Profile column may carry.
BASIC_CODES = frozenset(TABLE_LISTS.values())

#: The "Rtn. Pat. Chars. Opt." column of Table E.1-1: tag -> code.  ``C`` rows
#: are free text (allergies, pre-medication...) that only a person can clean, so
#: they keep their Basic Profile action (see :func:`resolve`).  Rows the
#: standard added to the table after 2020 (ethnic group code sequences) are not
#: retained until their option column entry is checked against the text.
RETAIN_PATIENT_CHARACTERISTICS: Mapping[int, str] = {
    0x00102110: "C",  # Allergies
    0x00102160: "K",  # Ethnic Group
    0x00101010: "K",  # Patient's Age
    0x00100040: "K",  # Patient's Sex
    0x00102203: "K",  # Patient's Sex Neutered
    0x00101020: "K",  # Patient's Size
    0x00101030: "K",  # Patient's Weight
    0x00380500: "C",  # Patient State
    0x001021C0: "K",  # Pregnancy Status
    0x00400012: "C",  # Pre-Medication
    0x001021A0: "K",  # Smoking Status
    0x00380050: "C",  # Special Needs
}

#: Dates the modified-dates option leaves at their Basic Profile action.
BIRTH_DATE_TIME = frozenset({0x00100030, 0x00100032})
#: Value representations the modified-dates option cleans (by shifting).
DATE_VRS = frozenset({"DA", "DT"})


class Action(enum.Enum):
    """What happens to one element; the resolved form of an action code."""

    REMOVE = "X"
    EMPTY = "Z"
    DUMMY = "D"
    KEEP = "K"
    CLEAN = "C"
    UID = "U"


@dataclass(frozen=True)
class RepeatingRow:
    """A table row naming a whole family of groups, e.g. Overlay Data (60xx,3000)."""

    group: int
    group_mask: int
    element: int
    element_mask: int
    code: str

    def matches(self, tag: int) -> bool:
        group, element = tag >> 16, tag & 0xFFFF
        return (group & self.group_mask) == self.group and (
            element & self.element_mask) == (self.element & self.element_mask)


@dataclass(frozen=True)
class ProfileTable:
    """The Basic Profile column: exact tags plus repeating-group rows."""

    codes: Mapping[int, str]
    repeating: tuple[RepeatingRow, ...]

    def code_for(self, tag: int) -> str | None:
        code = self.codes.get(tag)
        if code is not None:
            return code
        for row in self.repeating:
            if row.matches(tag):
                return row.code
        return None

    def __len__(self) -> int:
        return len(self.codes) + len(self.repeating)


def _table_source() -> Path:
    """The package's table file, located without importing the package."""
    spec = importlib.util.find_spec("dicomanonymizer")
    if spec is None or not spec.submodule_search_locations:
        raise DomainError("unavailable", "the dicom-anonymizer package is not installed",
                          status=503)
    root = Path(next(iter(spec.submodule_search_locations)))
    return root / "dicom_anonymization_databases" / f"{TABLE_EDITION}.py"


def parse_table(source: str) -> ProfileTable:
    """Read the table from the text of a ``dicomfields_*.py`` module.

    Each list holds ``(group, element)`` or, for repeating groups,
    ``(group, element, group_mask, element_mask)`` tuples.  A tag listed under
    two codes, an unknown list shape or a missing list is an error: the table
    must be unambiguous before anything is de-identified with it.
    """
    found: dict[str, list[tuple[int, ...]]] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name) and target.id in TABLE_LISTS:
                found[target.id] = ast.literal_eval(node.value)
    missing = sorted(set(TABLE_LISTS) - set(found))
    if missing:
        raise DomainError("invalid_profile_table", f"the table has no list {missing}")
    codes: dict[int, str] = {}
    repeating: list[RepeatingRow] = []
    for name, rows in found.items():
        code = TABLE_LISTS[name]
        for row in rows:
            if len(row) == 2:
                tag = (row[0] << 16) | row[1]
                if tag in codes:
                    raise DomainError("invalid_profile_table",
                                      f"({row[0]:04X},{row[1]:04X}) is listed twice")
                codes[tag] = code
            elif len(row) == 4:
                repeating.append(RepeatingRow(row[0], row[2], row[1], row[3], code))
            else:
                raise DomainError("invalid_profile_table", f"unexpected row {row!r}")
    return ProfileTable(codes=codes, repeating=tuple(repeating))


@cache
def basic_profile() -> ProfileTable:
    """The Basic Profile table of the installed package (read once per process)."""
    return parse_table(_table_source().read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Options:
    """The profile options a project has chosen (modified dates is always on)."""

    retain_patient_characteristics: bool = False


def option_code(tag: int, vr: str, basic: str, options: Options) -> str:
    """The code after the options: the option column's entry where one applies."""
    if options.retain_patient_characteristics:
        retained = RETAIN_PATIENT_CHARACTERISTICS.get(tag)
        if retained is not None:
            return retained if retained == "K" else basic
    if vr in DATE_VRS and tag not in BIRTH_DATE_TIME:
        return "C"
    return basic


def resolve(code: str, *, vr: str) -> Action:
    """One action for a (possibly combined) code and the element's VR.

    For a combined code the strictest choice is taken (``X`` before ``Z``
    before ``D``): the platform's de-identified copy serves display and
    training, not a PACS that validates IOD attribute types, so keeping a
    value only because a Type 1 slot wants one would buy nothing.  ``Z/D``
    empties.  ``X/Z/U*`` (reference sequences) removes: a single radiograph
    needs none of the instances it references.  A ``C`` that the platform
    cannot clean automatically never reaches here (see :func:`option_code`).
    """
    if code == "C" and vr not in DATE_VRS:
        raise DomainError("invalid_profile_table", f"no automatic clean for VR {vr}")
    first = code.split("/")[0].rstrip("*")
    try:
        return Action(first)
    except ValueError as exc:
        raise DomainError("invalid_profile_table", f"unknown action code {code!r}") from exc
