"""Synthetic multi-reader chest radiograph studies (DICOM + VinBigData-format CSVs).

Pure Python (numpy, pydicom, OpenCV, nibabel); never imports Django.  See
:func:`generate_studies` for the folder it writes and :func:`make_dataset`
for building single custom DICOM files in tests.
"""

from annotations.imaging.synthetic.dicom_writer import make_dataset, write_dataset
from annotations.imaging.synthetic.generate import (
    CSV_HEADER,
    GenerationResult,
    generate_studies,
    image_id_for,
)
from annotations.imaging.synthetic.lesions import LESION_KINDS, Box
from annotations.imaging.synthetic.readers import ReaderProfile, default_profiles

__all__ = [
    "CSV_HEADER",
    "LESION_KINDS",
    "Box",
    "GenerationResult",
    "ReaderProfile",
    "default_profiles",
    "generate_studies",
    "image_id_for",
    "make_dataset",
    "write_dataset",
]
