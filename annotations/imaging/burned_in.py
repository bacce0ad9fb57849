"""Burned-in annotation: may the pixels carry text (a name, an ID, a date)?

De-identifying the header does nothing for text drawn into the pixels, and
the platform does not read pixels for text.  So it relies on the file's own
statement, Burned In Annotation (0028,0301), and on where that statement is
worth little:

* ``YES``: text is there.  Refused unless the project allows it.
* ``NO``: accepted.
* absent (or a value that is neither): accepted where burned-in text is rare,
  refused where it is common unless the project allows it.  Common means:
  a modality whose images are screens, photographs, digitised film or
  dental panoramics (:data:`TEXT_PRONE_MODALITIES`); a Secondary Capture SOP
  class, whatever Modality says (screenshots and scanned film are stored so);
  a Conversion Type (the image was digitised or converted); or an Image Type
  of ``SECONDARY`` (made after the examination: screen saves, key images).
  CR and DX primary images are usually clean, and Burned In Annotation is
  optional in CR, so its absence there alone refuses nothing.

Messages name only the platform's own vocabulary, never a value read from the
file (a damaged Modality could hold anything).
"""

from __future__ import annotations

from pydicom.dataset import Dataset

#: Modalities (PS3.3 C.7.3.1.1.1 defined terms) where text in the pixels is common.
TEXT_PRONE_MODALITIES = frozenset({
    "US", "XA", "RF", "SC", "OT", "XC", "ES", "GM", "SM", "OP", "DOC", "PX", "RG", "IVUS",
})
#: Secondary Capture SOP classes (single-frame and the multi-frame family).
SECONDARY_CAPTURE_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.7.1",
    "1.2.840.10008.5.1.4.1.1.7.2", "1.2.840.10008.5.1.4.1.1.7.3",
    "1.2.840.10008.5.1.4.1.1.7.4",
})

#: Quarantine reasons (documented in docs/ingest.md).
REASON_YES = "burned_in_annotation"
REASON_UNKNOWN = "burned_in_annotation_unknown"


def _why_text_prone(ds: Dataset) -> str | None:
    """Why this file's pixels are likely to carry text, or None."""
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if modality in TEXT_PRONE_MODALITIES:
        return f"{modality} images often carry text in the pixels"
    if str(ds.get("SOPClassUID", "") or "") in SECONDARY_CAPTURE_CLASSES:
        return "secondary captures (screens, scanned film) often carry text in the pixels"
    if str(ds.get("ConversionType", "") or "").strip():
        return "converted or digitised images often carry text in the pixels"
    image_type = ds.get("ImageType", None)
    values = [] if image_type is None else (
        [image_type] if isinstance(image_type, str) else list(image_type))
    if any(str(v).strip().upper() == "SECONDARY" for v in values):
        return "secondary (post-examination) images often carry text in the pixels"
    return None


def burned_in_refusal(ds: Dataset, *, allow: bool) -> tuple[str, str] | None:
    """``(reason, message)`` if the file must be quarantined for its pixels, else None.

    ``allow`` is the project's ``allow_burned_in_annotation``: the admin has
    taken responsibility for the pixels of this project's sources.
    """
    if allow:
        return None
    stated = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
    if stated == "YES":
        return REASON_YES, "BurnedInAnnotation is YES (text in the pixels)"
    if stated == "NO":
        return None
    why = _why_text_prone(ds)
    if why is None:
        return None
    return REASON_UNKNOWN, f"BurnedInAnnotation is not stated and {why}"
