"""Load one input file (DICOM, PNG or JPEG) and decide whether it is acceptable.

Every rejection is a ``DomainError`` whose ``code`` is the quarantine reason
shown to admins; the list is closed and documented in docs/ingest.md:

``empty_file``, ``not_an_image``, ``unreadable_dicom``, ``no_pixel_data``,
``unsupported_transfer_syntax``, ``pixel_decode_failed``, ``multi_frame``,
``not_radiograph``, ``unsupported_photometric``, ``implausible_size``,
``burned_in_annotation``.

Checks that need only the header run before the (expensive) pixel decode.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from annotations.errors import DomainError
from annotations.imaging.render import VoiSpec

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"


@dataclass(frozen=True)
class Limits:
    min_side: int = 128
    max_side: int = 8192
    modalities: tuple[str, ...] = ("CR", "DX", "DR", "RG", "PX")
    allow_burned_in: bool = False


@dataclass
class LoadedImage:
    """A decoded, accepted input.  ``dataset`` is None for PNG/JPEG inputs."""

    pixels: np.ndarray
    spec: VoiSpec
    source_format: str
    dataset: Dataset | None
    pixel_hash: str
    modality: str = ""
    view_position: str = ""
    pixel_spacing: tuple[float, float] | None = None
    bits_stored: int | None = None

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


def reject(code: str, message: str) -> DomainError:
    return DomainError(code, message, status=422)


def pixel_hash(pixels: np.ndarray) -> str:
    """Hash of decoded values: the same image compressed differently is a duplicate."""
    h = hashlib.sha256()
    h.update(f"{pixels.shape}|{pixels.dtype.str}".encode())
    h.update(np.ascontiguousarray(pixels).tobytes())
    return h.hexdigest()


def load_file(path: Path, limits: Limits) -> LoadedImage:
    data = Path(path).read_bytes()
    if not data:
        raise reject("empty_file", "the file is empty")
    if data.startswith(PNG_MAGIC) or data.startswith(JPEG_MAGIC):
        return _load_raster(data, limits)
    return _load_dicom(data, limits)


def _check_size(rows: int, cols: int, limits: Limits) -> None:
    lo, hi = limits.min_side, limits.max_side
    if not (lo <= rows <= hi and lo <= cols <= hi):
        raise reject(
            "implausible_size",
            f"{cols}x{rows} pixels is outside {limits.min_side}..{limits.max_side} per side",
        )


def _load_raster(data: bytes, limits: Limits) -> LoadedImage:
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise reject("not_an_image", "PNG/JPEG header but the image cannot be decoded")
    if arr.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if arr.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        arr = cv2.cvtColor(arr, code)
    _check_size(arr.shape[0], arr.shape[1], limits)
    if arr.dtype == np.uint8:
        spec = VoiSpec(window_center=127.5, window_width=256.0, voi_function="LINEAR_EXACT")
    else:
        spec = VoiSpec()  # 16-bit PNG: percentile window
    fmt = "png" if data.startswith(PNG_MAGIC) else "jpeg"
    return LoadedImage(arr, spec, fmt, None, pixel_hash(arr), bits_stored=arr.dtype.itemsize * 8)


def _first(value: object) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return float(value[0]) if len(value) else None
    return float(value)


def _lut(item: Dataset) -> tuple[tuple[int, int, int], np.ndarray]:
    desc = [int(v) for v in item.LUTDescriptor]
    raw = item.LUTData
    if isinstance(raw, bytes):
        dtype = np.uint8 if desc[2] <= 8 and len(raw) == desc[0] else np.uint16
        data = np.frombuffer(raw, dtype=dtype)
    else:
        data = np.asarray(raw if isinstance(raw, (list, tuple)) else list(raw), dtype=np.int64)
    return (desc[0], desc[1], desc[2]), data


def voi_spec(ds: Dataset) -> VoiSpec:
    modality_lut = None
    if "ModalityLUTSequence" in ds and len(ds.ModalityLUTSequence):
        modality_lut = _lut(ds.ModalityLUTSequence[0])
    voi_lut = None
    if "VOILUTSequence" in ds and len(ds.VOILUTSequence):
        voi_lut = _lut(ds.VOILUTSequence[0])
    return VoiSpec(
        photometric=str(ds.get("PhotometricInterpretation", "MONOCHROME2")),
        rescale_slope=_first(ds.get("RescaleSlope")) or 1.0,
        rescale_intercept=_first(ds.get("RescaleIntercept")) or 0.0,
        modality_lut=modality_lut,
        voi_lut=voi_lut,
        window_center=_first(ds.get("WindowCenter")),
        window_width=_first(ds.get("WindowWidth")),
        voi_function=str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR"),
        presentation_inverse=str(ds.get("PresentationLUTShape", "")) == "INVERSE",
    )


def _load_dicom(data: bytes, limits: Limits) -> LoadedImage:
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except InvalidDicomError as exc:
        raise reject("not_an_image", "not a DICOM, PNG or JPEG file") from exc
    except Exception as exc:  # pydicom raises many types on damaged headers
        raise reject("unreadable_dicom", f"damaged DICOM header ({type(exc).__name__})") from exc
    if "PixelData" not in ds and data.rfind(b"\xe0\x7f\x10\x00") > 128:
        # pydicom drops an element whose value runs past the end of the file
        raise reject("pixel_decode_failed", "the pixel data is truncated")
    try:
        return _accept_dicom(ds, limits)
    except DomainError:
        raise
    except Exception as exc:
        message = f"damaged DICOM attributes ({type(exc).__name__})"
        raise reject("unreadable_dicom", message) from exc


def _accept_dicom(ds: Dataset, limits: Limits) -> LoadedImage:
    # pydicom converts element values lazily; convert them all now so a damaged
    # value fails here, as an unreadable file, and not later in de-identification.
    for _ in ds.iterall():
        pass
    if "PixelData" not in ds:
        raise reject("no_pixel_data", "the DICOM file has no pixel data")
    modality = str(ds.get("Modality", "") or "")
    if modality not in limits.modalities:
        raise reject("not_radiograph", f"modality {modality or 'missing'} is not a radiograph")
    if int(ds.get("NumberOfFrames", 1) or 1) != 1:
        raise reject("multi_frame", "multi-frame images are not chest radiographs")
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise reject("unsupported_photometric", f"photometric {photometric or 'missing'}")
    _check_size(int(ds.Rows), int(ds.Columns), limits)
    if str(ds.get("BurnedInAnnotation", "")).upper() == "YES" and not limits.allow_burned_in:
        raise reject("burned_in_annotation", "BurnedInAnnotation is YES (text in the pixels)")
    pixels = _decode(ds)
    if pixels.ndim != 2 or pixels.shape != (int(ds.Rows), int(ds.Columns)):
        raise reject("pixel_decode_failed", f"decoded shape {pixels.shape} does not match header")
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    return LoadedImage(
        pixels=pixels,
        spec=voi_spec(ds),
        source_format="dicom",
        dataset=ds,
        pixel_hash=pixel_hash(pixels),
        modality=modality,
        view_position=str(ds.get("ViewPosition", "") or ""),
        pixel_spacing=(float(spacing[0]), float(spacing[1])) if spacing else None,
        bits_stored=int(ds.get("BitsStored", 0) or 0) or None,
    )


def _decode(ds: Dataset) -> np.ndarray:
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    try:
        return ds.pixel_array
    except NotImplementedError as exc:
        raise reject("unsupported_transfer_syntax", f"no decoder for {syntax}") from exc
    except RuntimeError as exc:
        if "plugin" in str(exc).lower() or "unable to decode" in str(exc).lower():
            raise reject("unsupported_transfer_syntax", f"no decoder for {syntax}") from exc
        raise reject("pixel_decode_failed", f"pixel data cannot be decoded ({syntax})") from exc
    except Exception as exc:
        raise reject("pixel_decode_failed", f"pixel data cannot be decoded ({syntax})") from exc
