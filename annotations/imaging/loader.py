"""Load one input file (DICOM, PNG or JPEG) and decide whether it is acceptable.

Every rejection is a ``DomainError`` whose ``code`` is the quarantine reason
shown to admins; the list is closed and documented in docs/ingest.md:

``empty_file``, ``not_an_image``, ``unreadable_dicom``, ``no_pixel_data``,
``unsupported_transfer_syntax``, ``pixel_decode_failed``, ``multi_frame``,
``not_radiograph``, ``unsupported_photometric``, ``implausible_size``,
``burned_in_annotation``, ``burned_in_annotation_unknown``.

Messages quote a value read from the file only when it is one of the
standard's own terms (a modality, a photometric interpretation, a registered
transfer syntax): a damaged or hostile header could hold a patient's name in
any of them, and the message is stored and shown to admins.

Checks that need only the header run before the (expensive) pixel decode:
for DICOM, Rows x Columns; for PNG/JPEG, the dimensions in the IHDR chunk or
the JPEG frame header, so that a small file claiming a huge image (a
"decompression bomb") is refused before a decoder allocates its pixels.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from annotations.errors import DomainError
from annotations.imaging.burned_in import burned_in_refusal
from annotations.imaging.render import VoiSpec


class _WithholdQuotedValues(logging.Filter):
    """pydicom's warnings quote values read from the file (an unknown character
    set, an invalid value), and any of them may be a patient's name: the quoted
    part is withheld before the record reaches a handler."""

    _QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
    _LISTED = re.compile(r"(ignoring:).*$")

    def filter(self, record: logging.LogRecord) -> bool:
        message = self._QUOTED.sub("'(withheld)'", record.getMessage())
        record.msg = self._LISTED.sub(r"\1 (withheld)", message)
        record.args = ()
        return True


if not any(isinstance(f, _WithholdQuotedValues) for f in logging.getLogger("pydicom").filters):
    logging.getLogger("pydicom").addFilter(_WithholdQuotedValues())

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
    #: BodyPartExamined, upper-cased, when it is a plain code string (never free text).
    body_part: str = ""
    pixel_spacing: tuple[float, float] | None = None
    bits_stored: int | None = None

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


#: Modality defined terms (PS3.3 C.7.3.1.1.1), quoted in messages; others are not.
KNOWN_MODALITIES = frozenset({
    "AR", "ASMT", "AU", "BDUS", "BI", "BMD", "CR", "CT", "CTPROTOCOL", "DG", "DOC", "DX",
    "ECG", "EPS", "ES", "FID", "GM", "HC", "HD", "IO", "IOL", "IVOCT", "IVUS", "KER", "KO",
    "LEN", "LS", "MG", "MR", "M3D", "NM", "OAM", "OCT", "OP", "OPM", "OPT", "OPTBSV",
    "OPTENF", "OPV", "OSS", "OT", "PLAN", "PR", "PT", "PX", "REG", "RESP", "RF", "RG",
    "RTDOSE", "RTIMAGE", "RTPLAN", "RTRECORD", "RTSTRUCT", "RWV", "SEG", "SM", "SMR", "SR",
    "SRF", "STAIN", "TEXTUREMAP", "TG", "US", "VA", "XA", "XC", "DR",
})
#: Photometric interpretations of PS3.3 C.7.6.3.1.2.
KNOWN_PHOTOMETRICS = frozenset({
    "MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "HSV", "ARGB", "CMYK", "YBR_FULL",
    "YBR_FULL_422", "YBR_PARTIAL_422", "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT",
})
#: View Position defined terms (PS3.3 C.8.11.5.1.1); any other value is stored as "".
KNOWN_VIEW_POSITIONS = frozenset({"AP", "PA", "LL", "RL", "RLD", "LLD", "RLO", "LLO"})


def _term(value: str, known: frozenset[str]) -> str:
    """``value`` for a message if it is a standard term, else a neutral word."""
    if not value:
        return "missing"
    return value if value in known else "(not a standard term)"


def _syntax_name(syntax: object) -> str:
    """A registered transfer syntax by name; anything else is not quoted."""
    if not syntax:
        return "a missing transfer syntax"
    uid = pydicom.uid.UID(str(syntax))
    return uid.name if uid.is_transfer_syntax else "an unregistered transfer syntax"


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


#: JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic...);
#: 0xC4 (DHT), 0xC8 (JPG) and 0xCC (DAC) share the range but are not frames.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
#: Markers without a length field.
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xDA)})


def raster_dimensions(data: bytes) -> tuple[int, int]:
    """(width, height) that a PNG or JPEG header declares, read without decoding.

    Raises ``not_an_image`` when the header is damaged or has no frame size.
    """
    if data.startswith(PNG_MAGIC):
        # signature (8), IHDR length (4), b"IHDR" (4), width (4), height (4)
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise reject("not_an_image", "PNG signature but no IHDR header")
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    pos = 2  # after SOI
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            break
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if marker in _JPEG_SOF:
            if length < 7 or pos + 9 > len(data):
                break
            height = int.from_bytes(data[pos + 5:pos + 7], "big")
            width = int.from_bytes(data[pos + 7:pos + 9], "big")
            if not (width and height):  # height 0: defined later by DNL, unsupported
                break
            return width, height
        if marker == 0xDA or length < 2:  # scan data before any frame header
            break
        pos += 2 + length
    raise reject("not_an_image", "JPEG signature but no readable frame header")


def _load_raster(data: bytes, limits: Limits) -> LoadedImage:
    width, height = raster_dimensions(data)
    # the decoder allocates what the header declares: refuse before it runs
    _check_size(height, width, limits)
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise reject("not_an_image", "PNG/JPEG header but the image cannot be decoded")
    if arr.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if arr.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        arr = cv2.cvtColor(arr, code)
    if arr.shape[:2] != (height, width):
        raise reject("not_an_image", "the decoded image does not match its header")
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
    """Read and accept a DICOM file, with pydicom's warnings silenced: they quote
    values from the file, and a worker's stderr ends up in its log."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _read_dicom(data, limits)


def _read_dicom(data: bytes, limits: Limits) -> LoadedImage:
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
        raise reject("not_radiograph",
                     f"modality {_term(modality, KNOWN_MODALITIES)} is not a radiograph")
    if int(ds.get("NumberOfFrames", 1) or 1) != 1:
        raise reject("multi_frame", "multi-frame images are not chest radiographs")
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise reject("unsupported_photometric",
                     f"photometric {_term(photometric, KNOWN_PHOTOMETRICS)}")
    _check_size(int(ds.Rows), int(ds.Columns), limits)
    refusal = burned_in_refusal(ds, allow=limits.allow_burned_in)
    if refusal is not None:
        raise reject(*refusal)
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
        view_position=_view_position(ds),
        body_part=_body_part(ds),
        pixel_spacing=(float(spacing[0]), float(spacing[1])) if spacing else None,
        bits_stored=int(ds.get("BitsStored", 0) or 0) or None,
    )


def _body_part(ds: Dataset) -> str:
    """A code string only (CS: capitals, digits, space, underscore, at most 16)."""
    part = str(ds.get("BodyPartExamined", "") or "").strip().upper()
    return part if len(part) <= 16 and all(c.isupper() or c.isdigit() or c in " _"
                                           for c in part) else "OTHER"


def _view_position(ds: Dataset) -> str:
    view = str(ds.get("ViewPosition", "") or "").strip().upper()
    return view if view in KNOWN_VIEW_POSITIONS else ""


def _decode(ds: Dataset) -> np.ndarray:
    raw = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    syntax = _syntax_name(raw)
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
