"""Build and write realistic CR / DX chest radiograph DICOM files.

The files deliberately vary in the ways real exports do (modality and SOP
class, MONOCHROME1 vs MONOCHROME2, 12..16 stored bits, rescale, one or
several windows or a VOI LUT, compressed or not) so that readers, renderers
and de-identification are exercised on every branch they must handle.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

from annotations.errors import DomainError
from annotations.imaging.synthetic.identity import PRIVATE_CREATOR, PRIVATE_GROUP

CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
DX_PRESENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"
#: Transfer syntaxes this module writes (and pydicom decodes in the platform's venv).
TRANSFER_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless,
                     JPEG2000Lossless)
_COMPRESSED = (RLELossless, JPEG2000Lossless)


def _rand_uid(rng: np.random.Generator, what: str) -> str:
    return str(generate_uid(entropy_srcs=[what, str(int(rng.integers(2**62)))]))


def _to_stored(pixels: np.ndarray, bits_stored: int) -> np.ndarray:
    """Presentation values (high = dense) as unsigned integers within ``bits_stored``."""
    top = (1 << bits_stored) - 1
    if np.issubdtype(pixels.dtype, np.floating):
        return np.round(np.clip(pixels, 0.0, 1.0) * top).astype(np.uint16)
    if pixels.min() < 0 or pixels.max() > top:
        raise DomainError("invalid_pixels", f"pixel values exceed {bits_stored} stored bits")
    return pixels.astype(np.uint16)


def _voi(ds: Dataset, values: np.ndarray, voi: str, rng: np.random.Generator,
         slope: float, intercept: float) -> None:
    """Window(s) or a VOI LUT computed on the modality-LUT output of ``values``."""
    sample = values[:: max(1, values.shape[0] // 200), :: max(1, values.shape[1] // 200)]
    lo, hi = np.percentile(sample.astype(np.float64) * slope + intercept, [2.0, 99.5])
    if voi == "window":
        centre = (lo + hi) / 2 + rng.normal(0, 0.03) * (hi - lo)
        width = (hi - lo) * rng.uniform(0.9, 1.2)
        if rng.random() < 0.35:
            ds.WindowCenter = [round(centre, 1), round(centre + 0.1 * width, 1),
                               round(centre - 0.1 * width, 1)]
            ds.WindowWidth = [round(width, 1), round(width * 0.7, 1), round(width * 1.3, 1)]
            ds.WindowCenterWidthExplanation = ["NORMAL", "HARDER", "SOFTER"]
        else:
            ds.WindowCenter = round(centre, 1)
            ds.WindowWidth = round(width, 1)
        return
    if voi == "lut":
        # A vendor-style non-linear LUT: half histogram equalisation, half linear, over
        # the central 98% of values, so neither background nor bone takes the range.
        lo, hi = np.percentile(sample.astype(np.float64) * slope + intercept, [1.0, 99.0])
        first = max(0, int(np.floor(lo)))
        n = int(min(65535, max(2, np.ceil(hi) - first + 1)))
        hist, _ = np.histogram(sample * slope + intercept, bins=n, range=(first, first + n))
        cdf = np.cumsum(hist).astype(np.float64)
        cdf /= max(cdf[-1], 1.0)
        curve = 0.5 * cdf + 0.5 * np.linspace(0.0, 1.0, n)
        out_bits = 12 if rng.random() < 0.5 else 16
        data = np.round(curve * ((1 << out_bits) - 1)).astype(np.uint16)
        item = Dataset()
        # Both elements have ambiguous VRs ("US or SS", "US or OW"); state them.  OW
        # because a US value is capped at 32767 entries in explicit VR.
        item.add_new(0x00283002, "US", [n, first, out_bits])
        item.LUTExplanation = "EQUALIZED"
        item.add_new(0x00283006, "OW", data.astype("<u2").tobytes())
        ds.VOILUTSequence = Sequence([item])
        return
    if voi != "none":
        raise DomainError("invalid_argument", f"unknown voi {voi!r}")


def make_dataset(
    pixels: np.ndarray,
    *,
    rng: np.random.Generator,
    modality: str = "DX",
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    identity: dict[str, str] | None = None,
    voi: str = "window",
    transfer_syntax: str = ExplicitVRLittleEndian,
    view_position: str = "PA",
    pixel_spacing_mm: float = 0.175,
    rescale: tuple[float, float] | None = None,
) -> Dataset:
    """A complete CR/DX dataset (with file meta) holding ``pixels``.

    ``pixels`` are presentation values where high means dense/bright in a
    MONOCHROME2 display: floats in [0, 1] (scaled to ``bits_stored``) or
    unsigned integers already within ``bits_stored``.  For ``MONOCHROME1``
    the stored values are inverted, as a CR reader would write them.
    ``identity`` maps DICOM keywords (and ``Private_0009_10xx`` keys) to the
    values written; missing UIDs are generated from ``rng``.
    """
    if pixels.ndim != 2:
        raise DomainError("invalid_pixels", "expected a 2-D image")
    if modality not in ("CR", "DX"):
        raise DomainError("invalid_argument", f"modality must be CR or DX, not {modality!r}")
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise DomainError("invalid_argument", f"unsupported photometric {photometric!r}")
    if not 12 <= bits_stored <= 16:
        raise DomainError("invalid_argument", "bits_stored must be within 12..16")
    if transfer_syntax not in TRANSFER_SYNTAXES:
        raise DomainError("invalid_argument", f"unsupported transfer syntax {transfer_syntax}")
    identity = dict(identity or {})
    for key in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        identity.setdefault(key, _rand_uid(rng, key))

    stored = _to_stored(pixels, bits_stored)
    top = (1 << bits_stored) - 1
    if photometric == "MONOCHROME1":
        stored = (top - stored).astype(np.uint16)
    sop_class = CR_STORAGE if modality == "CR" else DX_PRESENTATION_STORAGE

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY"] if modality == "CR" else ["ORIGINAL", "PRIMARY", ""]
    ds.SOPClassUID = sop_class
    ds.Modality = modality
    ds.Manufacturer = "ACME Medical Systems"
    ds.ManufacturerModelName = "ChestVision 3000" if modality == "DX" else "CR-Reader 9"
    ds.SoftwareVersions = "4.2.1"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = view_position
    ds.PatientOrientation = ["L", "F"]
    ds.KVP = round(float(rng.uniform(105, 125)), 1)
    ds.ExposureTime = int(rng.integers(4, 20))
    ds.XRayTubeCurrent = int(rng.integers(200, 500))
    ds.Exposure = int(rng.integers(1, 6))
    ds.DistanceSourceToDetector = 1800 if view_position == "PA" else 1000
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.SeriesDescription = f"CHEST {view_position}"
    ds.StudyDescription = "XR CHEST 1 VIEW"
    ds.ImagerPixelSpacing = [round(pixel_spacing_mm, 6)] * 2
    ds.PixelSpacing = [round(pixel_spacing_mm, 6)] * 2
    if modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.PixelIntensityRelationship = "LOG"
        # +1: lower values mean less beam intensity (MONOCHROME1 stores intensity-like).
        ds.PixelIntensityRelationshipSign = 1 if photometric == "MONOCHROME1" else -1
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    for key, value in identity.items():
        if not key.startswith("Private_"):
            setattr(ds, key, value)
    block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
    for key, value in identity.items():
        if key.startswith("Private_"):
            group, elem = (int(x, 16) for x in key.split("_")[1:3])
            if group != PRIVATE_GROUP:
                raise DomainError("invalid_argument", f"private tags live in group 0009: {key}")
            block.add_new(elem & 0xFF, "LO", value)

    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = (int(v) for v in stored.shape)
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    slope, intercept = rescale if rescale is not None else (1.0, 0.0)
    if rescale is not None:
        ds.RescaleSlope = f"{slope:g}"
        ds.RescaleIntercept = f"{intercept:g}"
        ds.RescaleType = "US"
    _voi(ds, stored, voi, rng, slope, intercept)
    ds.PixelData = stored.tobytes()

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = identity["SOPInstanceUID"]
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "CXR_SYNTH_1"
    ds.file_meta = meta
    if transfer_syntax in _COMPRESSED:
        ds.compress(transfer_syntax, generate_instance_uid=False)
        ds.LossyImageCompression = "00"
    elif transfer_syntax == ImplicitVRLittleEndian:
        meta.TransferSyntaxUID = ImplicitVRLittleEndian
    return ds


def write_dataset(ds: Dataset, path: Path) -> Path:
    """Write ``ds`` as a DICOM file (preamble + DICM) atomically: temp name, then rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.part")
    ds.save_as(tmp, enforce_file_format=True)
    os.replace(tmp, path)
    return path
