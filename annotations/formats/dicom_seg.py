"""DICOM Segmentation objects (binary SEG) of a film's masks, written with highdicom.

One SEG instance per image holds one segment per structure, referencing the
de-identified source instance the platform stores (its Study, Series and SOP Instance
UIDs), so OHIF or 3D Slicer open it over the film.  Anatomy classes are coded as
SNOMED CT anatomic structures; findings as a morphologically abnormal structure, with
the class name as the segment label.  The SEG carries no patient identity beyond what
the de-identified source already holds (highdicom copies the patient and study
modules from it).

Pure module: numpy, pydicom, highdicom; no Django.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import highdicom as hd
import numpy as np
import pydicom
from highdicom.sr.coding import CodedConcept
from pydicom.sr.codedict import codes

from annotations.errors import DomainError
from annotations.taxonomy import MaskClassSpec

#: SNOMED CT codes of the anatomy preset's structures.
_ANATOMY_CODES = {
    "Right lung": CodedConcept("3341006", "SCT", "Right lung"),
    "Left lung": CodedConcept("44029006", "SCT", "Left lung"),
    "Heart": CodedConcept("80891009", "SCT", "Heart"),
}
SOFTWARE = "cxr-platform"
#: Type 2 attributes (present, may be empty) the SEG copies from its source; a
#: de-identified film may lack them altogether.
_TYPE2 = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyID",
          "StudyDate", "StudyTime", "ReferringPhysicianName", "AccessionNumber")


def _segment(number: int, spec: MaskClassSpec, algorithm: str) -> hd.seg.SegmentDescription:
    if spec.anatomy:
        category = codes.SCT.Organ if hasattr(codes.SCT, "Organ") else codes.SCT.Anatomy
        kind = _ANATOMY_CODES.get(spec.name, codes.SCT.Organ)
    else:
        category = codes.SCT.MorphologicallyAbnormalStructure
        kind = codes.SCT.MorphologicallyAbnormalStructure
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=spec.name[:64],
        segmented_property_category=category,
        segmented_property_type=kind,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL if algorithm == "manual"
        else hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC,
        algorithm_identification=None if algorithm == "manual" else
        hd.AlgorithmIdentificationSequence(name=algorithm[:64], version="1",
                                           family=codes.cid7162.ArtificialIntelligence),
    )


def build_segmentation(source: pydicom.Dataset, masks: Mapping[str, np.ndarray],
                       classes: Sequence[MaskClassSpec], *, algorithm: str = "manual",
                       series_number: int = 900) -> pydicom.Dataset:
    """A binary SEG of ``masks`` (``{class name: bool (rows, cols)}``) over ``source``.

    ``algorithm``: ``manual`` for one reader's masks, otherwise the consensus method's
    name (``staple``...), recorded as the segments' algorithm.
    """
    by_name = {c.name: c for c in classes}
    names = [n for n in sorted(masks, key=lambda n: by_name[n].index if n in by_name else 1e9)]
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise DomainError("invalid_mask", f"unknown mask classes {unknown}")
    if not names:
        raise DomainError("invalid_mask", "nothing to write: no masks")
    shape = (int(source.Rows), int(source.Columns))
    stack = np.stack([np.asarray(masks[n], bool) for n in names], axis=-1)
    if stack.shape[:2] != shape:
        raise DomainError("invalid_mask", f"masks of {stack.shape[:2]} on a {shape} film")
    segments = [_segment(i + 1, by_name[n], algorithm) for i, n in enumerate(names)]
    src = source.copy()  # a shallow copy: the caller's dataset is not changed
    for keyword in _TYPE2:
        if keyword not in src:
            setattr(src, keyword, "")
    spacing = src.get("PixelSpacing") or src.get("ImagerPixelSpacing") or [1.0, 1.0]
    # a projection film has no slice thickness; highdicom's reader wants one, so 1 mm
    # (the value is carried, never used to measure anything)
    measures = hd.PixelMeasuresSequence(pixel_spacing=[float(v) for v in spacing][:2],
                                        slice_thickness=1.0)
    return hd.seg.Segmentation(
        source_images=[src],
        pixel_measures=measures,
        pixel_array=stack[None].astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segments,
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=SOFTWARE,
        manufacturer_model_name=SOFTWARE,
        software_versions="1",
        device_serial_number="0",
        series_description=f"Masks ({algorithm})"[:64],
    )


def read_segmentation(ds: pydicom.Dataset) -> dict[str, np.ndarray]:
    """``{segment label: bool mask}`` of a single-frame-source binary SEG (read back with
    highdicom: what a viewer sees)."""
    seg = hd.seg.Segmentation.from_dataset(ds)
    (_study, _series, source_uid), = seg.get_source_image_uids()
    out = {}
    for number in seg.segment_numbers:
        label = seg.get_segment_description(number).segment_label
        pixels = seg.get_pixels_by_source_instance([source_uid], segment_numbers=[number])
        out[label] = np.asarray(pixels).reshape(int(ds.Rows), int(ds.Columns)) > 0
    return out
