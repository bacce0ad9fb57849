"""Label taxonomies: the classes a project's readers may draw, as plain data.

A taxonomy is an ordered list of ``LabelClassSpec``.  Box classes carry a
stable integer ``class_id`` (the VinBigData CSV / COCO category index) and
a display colour; image-level classes (``"No finding"``) have no boxes.
Presets reproduce published data sets exactly so that their annotations
import without a mapping table:

* ``vindr_cxr``: the 14 local lesion classes of VinDr-CXR / the VinBigData
  challenge (class ids 0..13) plus image-level "No finding" (id 14);
* ``nih``: the 8 classes of the NIH ChestX-ray14 box list, plus "No finding";
* image-level sets (read as multi-select image labels, no boxes), the classes that
  chest radiograph classifiers are trained on: ``chestxray14`` (the 14 labels of NIH
  ChestX-ray14), ``lung_disease_9`` (the 9-class lung-disease set built on NIH films:
  Edema, Pneumonia, Tuberculosis, Cardiomegaly, Emphysema, Covid, Effusion,
  Atelectasis, No finding) and ``cxr_6`` (Cardiomegaly, Pleural effusion,
  Atelectasis, Consolidation, Edema, No finding).

A custom taxonomy may mix both: box classes and image-level classes.

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


def build_taxonomy(names: list[str], *, image_classes: list[str] | tuple[str, ...] = (),
                   no_finding: bool = True) -> list[LabelClassSpec]:
    """Taxonomy from box class names, then image-level class names, in order (class ids
    follow that order); "No finding" appended as image-level.

    Either list may be empty, not both: a project reads boxes, image-level findings or
    both.  "No finding" is always image-level, wherever it is named.
    """
    image_classes = [n for n in image_classes if n != NO_FINDING]
    every = [*names, *image_classes]
    if len(set(every)) != len(every):
        raise DomainError("invalid_taxonomy", "class names must be unique", detail=every)
    if any(not n.strip() for n in every):
        raise DomainError("invalid_taxonomy", "class names must not be empty")
    if not [n for n in every if n != NO_FINDING]:
        raise DomainError("invalid_taxonomy", "a taxonomy needs at least one finding class")
    specs = [
        LabelClassSpec(i, n, _code(n), _PALETTE[i % len(_PALETTE)],
                       image_level=i >= len(names) or n == NO_FINDING)
        for i, n in enumerate(every)
    ]
    if no_finding and NO_FINDING not in every:
        specs.append(LabelClassSpec(len(every), NO_FINDING, _code(NO_FINDING), "#9e9e9e", True))
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

#: NIH ChestX-ray14's 14 image labels (Wang et al. 2017), spelled as the data set does.
CHESTXRAY14_CLASSES = [
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening",
    "Hernia",
]

LUNG_DISEASE_9_CLASSES = [
    "Edema", "Pneumonia", "Tuberculosis", "Cardiomegaly", "Emphysema", "Covid", "Effusion",
    "Atelectasis",
]

CXR_6_CLASSES = ["Cardiomegaly", "Pleural effusion", "Atelectasis", "Consolidation", "Edema"]

PRESETS: dict[str, list[LabelClassSpec]] = {
    "vindr_cxr": build_taxonomy(VINDR_CXR_CLASSES),
    "nih": build_taxonomy(NIH_CLASSES),
    "chestxray14": build_taxonomy([], image_classes=CHESTXRAY14_CLASSES),
    "lung_disease_9": build_taxonomy([], image_classes=LUNG_DISEASE_9_CLASSES),
    "cxr_6": build_taxonomy([], image_classes=CXR_6_CLASSES),
}


def preset(name: str) -> list[LabelClassSpec]:
    try:
        return PRESETS[name]
    except KeyError as exc:
        raise DomainError(
            "unknown_preset", f"unknown taxonomy preset {name!r}", detail=sorted(PRESETS)
        ) from exc


# --- mask classes ---------------------------------------------------------------------
#
# Structures readers outline with a brush or polygon.  They are a list of their own beside
# the box/image taxonomy: an anatomy structure ("Left lung") is never a box or an image
# label, and a finding may be both a box class and a mask class (its extent), under the
# same name.

#: The anatomy preset: lung fields (JSRT/SCR convention: the heart's projection excluded)
#: and the heart, the structures the cardiothoracic ratio is measured from.
ANATOMY_MASK_CLASSES = ("Right lung", "Left lung", "Heart")
_MASK_PALETTE = ["#00c853", "#2979ff", "#ff1744", "#ffab00", "#d500f9", "#00e5ff"]


@dataclass(frozen=True)
class MaskClassSpec:
    """One class readers draw as a mask; ``anatomy`` marks normal structures (not findings)."""

    index: int
    name: str
    code: str
    color: str
    anatomy: bool = False


def build_mask_classes(names: list[str] | tuple[str, ...], *,
                       anatomy: list[str] | tuple[str, ...] = ()) -> list[MaskClassSpec]:
    """Mask classes in order; names listed in ``anatomy`` are marked as anatomy."""
    names = list(names)
    if len(set(names)) != len(names) or any(not n.strip() for n in names):
        raise DomainError("invalid_taxonomy", "mask class names must be unique and non-empty",
                          detail=names)
    if NO_FINDING in names:
        raise DomainError("invalid_taxonomy", f"{NO_FINDING!r} cannot be a mask class")
    specs = [MaskClassSpec(i, n, _code(n), _MASK_PALETTE[i % len(_MASK_PALETTE)],
                           anatomy=n in anatomy) for i, n in enumerate(names)]
    codes = [s.code for s in specs]
    if "" in codes or len(set(codes)) != len(codes):
        raise DomainError("invalid_taxonomy",
                          "mask class names must differ in their letters or digits",
                          detail=names)
    return specs


def mask_code(name: str) -> str:
    """The code a mask class is stored and exported under."""
    return _code(name)


MASK_PRESETS: dict[str, list[MaskClassSpec]] = {
    "anatomy": build_mask_classes(ANATOMY_MASK_CLASSES, anatomy=ANATOMY_MASK_CLASSES),
}


def mask_preset(name: str) -> list[MaskClassSpec]:
    try:
        return MASK_PRESETS[name]
    except KeyError as exc:
        raise DomainError("unknown_preset", f"unknown mask preset {name!r}",
                          detail=sorted(MASK_PRESETS)) from exc
