"""Label Studio labeling-config XML generated from a taxonomy, and its validator.

The platform owns the taxonomy; the labeling config is derived from it, never typed by
hand, so that the names readers click are exactly the class names the platform imports
back.  The XML is built with ElementTree, which escapes names such as ``Nodule/Mass`` or
``A & B`` correctly, and the validator parses a config back to prove that a stored or
edited config still matches its taxonomy (names of the tags the region mapping relies
on, every class present, nothing unknown).

Pure module: no Django.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass

import defusedxml.ElementTree as DefusedET
from defusedxml import DefusedXmlException

from annotations.errors import DomainError
from annotations.taxonomy import NO_FINDING, LabelClassSpec, MaskClassSpec

#: Tag names the region mapping (``regions.py``) and the ML backend rely on.
IMAGE_NAME = "image"
IMAGE_VALUE = "$image"  # the task data key holding the image URL
BOX_CONTROL = "label"
CHOICES_CONTROL = "image_labels"
MASK_CONTROL = "mask"  # BrushLabels: painted masks
POLYGON_CONTROL = "outline"  # PolygonLabels: the same mask classes, outlined
#: BrushLabels holding the model's explanation overlays (pre-labels only: what a reader
#: leaves there is never read as a mask)
EXPLANATION_CONTROL = "explanation"

_IMAGE_ATTRS = {
    "zoom": "true",
    "zoomControl": "true",
    "brightnessControl": "true",
    "contrastControl": "true",
    "rotateControl": "false",  # rotated views would need rotated boxes, which we refuse
}


@dataclass(frozen=True)
class LabelConfigClasses:
    """The class names a labeling config offers, in document order."""

    box_classes: tuple[str, ...]
    image_classes: tuple[str, ...]
    mask_classes: tuple[str, ...] = ()
    explanation_classes: tuple[str, ...] = ()


def split_taxonomy(taxonomy: Sequence[LabelClassSpec],
                   mask_classes: Sequence[MaskClassSpec] = ()) -> LabelConfigClasses:
    """Box classes, image-level classes and mask classes, each in taxonomy order."""
    return LabelConfigClasses(
        box_classes=tuple(c.name for c in taxonomy if not c.image_level),
        image_classes=tuple(c.name for c in taxonomy if c.image_level),
        mask_classes=tuple(c.name for c in mask_classes),
    )


def explanation_classes(taxonomy: Sequence[LabelClassSpec]) -> tuple[str, ...]:
    """The findings a classifier explains: every class but "No finding"."""
    return tuple(c.name for c in taxonomy if c.name != NO_FINDING)


def label_config(taxonomy: Sequence[LabelClassSpec],
                 mask_classes: Sequence[MaskClassSpec] = (), *,
                 explanations: bool = False) -> str:
    """The labeling config XML for ``taxonomy``: one Image, box labels (when the taxonomy
    has box classes), a brush and a polygon tool over the mask classes (when there are
    any; both give the same masks), image-level choices (multi-select, when the taxonomy
    has image-level classes); with ``explanations``, a brush control of the findings that
    only the model's explanation overlays use."""
    classes = split_taxonomy(taxonomy, mask_classes)
    if not classes.box_classes and not classes.image_classes and not classes.mask_classes:
        raise DomainError("invalid_taxonomy", "a taxonomy needs at least one class")
    view = ET.Element("View")
    ET.SubElement(view, "Image", {"name": IMAGE_NAME, "value": IMAGE_VALUE, **_IMAGE_ATTRS})
    for tag, name in (("BrushLabels", MASK_CONTROL), ("PolygonLabels", POLYGON_CONTROL)):
        if mask_classes:
            control = ET.SubElement(view, tag, {"name": name, "toName": IMAGE_NAME})
            for mc in mask_classes:
                ET.SubElement(control, "Label", {"value": mc.name, "background": mc.color})
    if classes.box_classes:
        boxes = ET.SubElement(view, "RectangleLabels",
                              {"name": BOX_CONTROL, "toName": IMAGE_NAME})
        for spec in taxonomy:
            if not spec.image_level:
                ET.SubElement(boxes, "Label", {"value": spec.name, "background": spec.color})
    if classes.image_classes:
        choices = ET.SubElement(
            view, "Choices",
            {"name": CHOICES_CONTROL, "toName": IMAGE_NAME, "choice": "multiple",
             "showInline": "true"},
        )
        for name in classes.image_classes:
            ET.SubElement(choices, "Choice", {"value": name})
    if explanations:
        control = ET.SubElement(view, "BrushLabels", {"name": EXPLANATION_CONTROL,
                                                      "toName": IMAGE_NAME})
        for spec in taxonomy:
            if spec.name != NO_FINDING:
                ET.SubElement(control, "Label", {"value": spec.name, "background": "#ff9100"})
    return ET.tostring(view, encoding="unicode")


#: A generated config is a few KB per hundred classes; anything far larger is not ours.
MAX_CONFIG_CHARS = 256 * 1024


def parse_label_config(xml: str) -> LabelConfigClasses:
    """Class names offered by a config built like ``label_config``; DomainError otherwise.

    The text may come from outside (the ML backend's ``/setup`` body), so it is bounded and
    parsed with defusedxml: no entity expansion, no external entities, no DTD.
    """
    if len(xml) > MAX_CONFIG_CHARS:
        raise _invalid(f"longer than {MAX_CONFIG_CHARS} characters")
    try:
        root = DefusedET.fromstring(xml, forbid_dtd=True)
    except ET.ParseError as exc:
        raise _invalid(f"not well-formed XML: {exc}") from exc
    except DefusedXmlException as exc:
        raise _invalid(f"refused XML construct ({type(exc).__name__})") from exc
    if root.tag != "View":
        raise _invalid(f"root tag is <{root.tag}>, expected <View>")
    images = [e for e in root.iter("Image") if e.get("name") == IMAGE_NAME]
    if len(images) != 1 or images[0].get("value") != IMAGE_VALUE:
        raise _invalid(f'expected one <Image name="{IMAGE_NAME}" value="{IMAGE_VALUE}">')
    boxes = _control(root, "RectangleLabels", BOX_CONTROL)
    choices = _control(root, "Choices", CHOICES_CONTROL)
    brushes = _control(root, "BrushLabels", MASK_CONTROL)
    polygons = _control(root, "PolygonLabels", POLYGON_CONTROL)
    if boxes is None and choices is None and brushes is None:
        raise _invalid(f'missing <RectangleLabels name="{BOX_CONTROL}" toName="{IMAGE_NAME}">'
                       f', <BrushLabels name="{MASK_CONTROL}" toName="{IMAGE_NAME}">'
                       f' or <Choices name="{CHOICES_CONTROL}" toName="{IMAGE_NAME}">')
    box_names = _values(boxes, "Label") if boxes is not None else ()
    choice_names = _values(choices, "Choice") if choices is not None else ()
    mask_names = _values(brushes, "Label") if brushes is not None else ()
    if polygons is not None and _values(polygons, "Label") != mask_names:
        raise _invalid(f'<PolygonLabels name="{POLYGON_CONTROL}"> must offer the brush\'s '
                       "mask classes")
    explained = _control(root, "BrushLabels", EXPLANATION_CONTROL)
    return LabelConfigClasses(box_classes=box_names, image_classes=choice_names,
                              mask_classes=mask_names,
                              explanation_classes=_values(explained, "Label")
                              if explained is not None else ())


def validate_label_config(xml: str, taxonomy: Sequence[LabelClassSpec],
                          mask_classes: Sequence[MaskClassSpec] = (), *,
                          explanations: bool = False) -> LabelConfigClasses:
    """Check that ``xml`` offers exactly the taxonomy's classes, each in the right control."""
    found = parse_label_config(xml)
    expected = split_taxonomy(taxonomy, mask_classes)
    problems = []
    for kind, want, got in (
        ("box", expected.box_classes, found.box_classes),
        ("image-level", expected.image_classes, found.image_classes),
        ("mask", expected.mask_classes, found.mask_classes),
        ("explanation", explanation_classes(taxonomy) if explanations else (),
         found.explanation_classes),
    ):
        missing = [n for n in want if n not in got]
        unknown = [n for n in got if n not in want]
        if missing:
            problems.append(f"{kind} classes missing: {missing}")
        if unknown:
            problems.append(f"{kind} classes not in the taxonomy: {unknown}")
    if problems:
        raise _invalid("; ".join(problems), detail=problems)
    return found


def _control(root: ET.Element, tag: str, name: str) -> ET.Element | None:
    matches = [e for e in root.iter(tag) if e.get("name") == name]
    if len(matches) > 1:
        raise _invalid(f'more than one <{tag} name="{name}">')
    if matches and matches[0].get("toName") != IMAGE_NAME:
        raise _invalid(f'<{tag} name="{name}"> must have toName="{IMAGE_NAME}"')
    return matches[0] if matches else None


def _values(control: ET.Element, tag: str) -> tuple[str, ...]:
    values = [child.get("value") or "" for child in control.iter(tag)]
    if any(not v.strip() for v in values):
        raise _invalid(f"a <{tag}> has an empty value")
    if len(set(values)) != len(values):
        raise _invalid(f"duplicate <{tag}> values: {values}")
    return tuple(values)


def _invalid(message: str, detail: object = None) -> DomainError:
    return DomainError("invalid_label_config", message, detail=detail)
