"""Label taxonomies: the classes a project's readers may draw, as plain data.

A taxonomy is an ordered list of ``LabelClassSpec``.  Box classes carry a
stable integer ``class_id`` (the VinBigData CSV / COCO category index) and
a display colour; image-level classes (``"No finding"``) have no boxes.
Presets reproduce published data sets exactly so that their annotations
import without a mapping table:

* ``vindr_cxr``: the 14 local lesion classes of VinDr-CXR / the VinBigData
  challenge (class ids 0..13) plus image-level "No finding" (id 14);
* ``nih``: the 8 classes of the NIH ChestX-ray14 box list, plus "No finding".

Pure module: no Django.
"""

from __future__ import annotations

from dataclasses import dataclass

from annotations.errors import DomainError

NO_FINDING = "No finding"


@dataclass(frozen=True)
class LabelClassSpec:
    class_id: int
    name: str
    code: str
    color: str
    image_level: bool = False


def _code(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name.lower()).strip("_")


_PALETTE = [
    "#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0",
    "#f032e6", "#bcf60c", "#fabebe", "#008080", "#e6beff", "#9a6324", "#800000",
    "#aaffc3", "#808000", "#ffd8b1", "#000075",
]


def build_taxonomy(names: list[str], *, no_finding: bool = True) -> list[LabelClassSpec]:
    """Taxonomy from box class names in order; "No finding" appended as image-level."""
    if len(set(names)) != len(names):
        raise DomainError("invalid_taxonomy", "class names must be unique", detail=names)
    if any(not n.strip() for n in names):
        raise DomainError("invalid_taxonomy", "class names must not be empty")
    specs = [
        LabelClassSpec(i, n, _code(n), _PALETTE[i % len(_PALETTE)]) for i, n in enumerate(names)
    ]
    if no_finding and NO_FINDING not in names:
        specs.append(LabelClassSpec(len(names), NO_FINDING, _code(NO_FINDING), "#9e9e9e", True))
    # every class is stored under its code (unique per project): names that differ only in
    # punctuation ("a b", "a_b"), or have no letters or digits ("?"), would collide there
    codes = [spec.code for spec in specs]
    if "" in codes or len(set(codes)) != len(codes):
        raise DomainError("invalid_taxonomy",
                          "class names must differ in their letters or digits",
                          detail=[spec.name for spec in specs])
    return specs


VINDR_CXR_CLASSES = [
    "Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Consolidation",
    "ILD", "Infiltration", "Lung Opacity", "Nodule/Mass", "Other lesion", "Pleural effusion",
    "Pleural thickening", "Pneumothorax", "Pulmonary fibrosis",
]

NIH_CLASSES = [
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltrate", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax",
]

PRESETS: dict[str, list[LabelClassSpec]] = {
    "vindr_cxr": build_taxonomy(VINDR_CXR_CLASSES),
    "nih": build_taxonomy(NIH_CLASSES),
}


def preset(name: str) -> list[LabelClassSpec]:
    try:
        return PRESETS[name]
    except KeyError as exc:
        raise DomainError(
            "unknown_preset", f"unknown taxonomy preset {name!r}", detail=sorted(PRESETS)
        ) from exc
