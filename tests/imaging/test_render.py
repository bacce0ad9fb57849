"""Rendering agrees with pydicom's own Modality/VOI LUT output, value for value.

pydicom's ``apply_windowing`` scales its output to the input's theoretical
range [y_min, y_max] (from BitsStored, PixelRepresentation and rescale); the
VOI LUT Sequence path returns raw LUT entries.  We normalise pydicom's output the
same way and compare with our 8-bit display values.
"""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from annotations.imaging.loader import voi_spec
from annotations.imaging.render import (
    clahe,
    render,
    resize_long_side,
    to_display8,
    to_uint8,
    to_unit,
)


def make_ds(pixels: np.ndarray, *, bits: int = 12, signed: bool = False,
            photometric: str = "MONOCHROME2", **tags) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits, bits - 1
    ds.PixelRepresentation, ds.SamplesPerPixel = int(signed), 1
    ds.PhotometricInterpretation = photometric
    for k, v in tags.items():
        setattr(ds, k, v)
    ds.PixelData = pixels.astype(np.int16 if signed else np.uint16).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=False, implicit_vr=False, little_endian=True)
    return pydicom.dcmread(io.BytesIO(buf.getvalue()), force=True)


def pydicom_display(ds: Dataset) -> np.ndarray:
    """pydicom's VOI output normalised to [0, 1], inverted for MONOCHROME1."""
    stored = ds.pixel_array
    values = apply_voi_lut(apply_modality_lut(stored, ds), ds).astype(np.float64)
    if "VOILUTSequence" in ds:
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        unit = values / (2**bits - 1)
    else:
        bits = int(ds.BitsStored)
        y_min, y_max = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if ds.PixelRepresentation \
            else (0, 2**bits - 1)
        slope, icpt = float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
        y_min, y_max = y_min * slope + icpt, y_max * slope + icpt
        unit = (values - y_min) / (y_max - y_min)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        unit = 1.0 - unit
    return unit


def _ramp(shape=(96, 80), hi=4095, seed=0, lo=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(lo, hi + 1, size=shape)


CASES = {
    "window_linear": dict(WindowCenter=1800, WindowWidth=1200),
    "window_multi_value": dict(WindowCenter=[2000, 1000], WindowWidth=[3000, 500]),
    "window_linear_exact": dict(WindowCenter=2048, WindowWidth=1000,
                                VOILUTFunction="LINEAR_EXACT"),
    "window_sigmoid": dict(WindowCenter=2048, WindowWidth=2000, VOILUTFunction="SIGMOID"),
    "rescaled": dict(RescaleSlope=2, RescaleIntercept=-1024, WindowCenter=1500,
                     WindowWidth=4000),
    "monochrome1": dict(photometric="MONOCHROME1", WindowCenter=2000, WindowWidth=3000),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_window_matches_pydicom(case):
    tags = dict(CASES[case])
    photometric = tags.pop("photometric", "MONOCHROME2")
    ds = make_ds(_ramp(), photometric=photometric, **tags)
    ours = to_display8(ds.pixel_array, voi_spec(ds)).astype(int)
    ref = to_uint8(pydicom_display(ds)).astype(int)
    assert np.abs(ours - ref).max() <= 1


def test_voi_lut_sequence_matches_pydicom_and_wins_over_window():
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.LUTData = (np.sqrt(np.arange(4096) / 4095) * 65535).astype(np.uint16).tolist()
    ds = make_ds(_ramp(), WindowCenter=100, WindowWidth=10)
    ds.VOILUTSequence = Sequence([item])
    ours = to_display8(ds.pixel_array, voi_spec(ds)).astype(int)
    ref = to_uint8(pydicom_display(ds)).astype(int)
    assert np.abs(ours - ref).max() <= 1
    assert ours.std() > 20  # the narrow window was not used


def test_signed_pixels():
    ds = make_ds(_ramp(lo=-2048, hi=2047), signed=True, WindowCenter=0, WindowWidth=3000)
    ours = to_display8(ds.pixel_array, voi_spec(ds)).astype(int)
    assert np.abs(ours - to_uint8(pydicom_display(ds)).astype(int)).max() <= 1


def test_monochrome1_is_inverted():
    px = _ramp()
    mono2 = to_display8(px, voi_spec(make_ds(px, WindowCenter=2048, WindowWidth=4096)))
    mono1 = to_display8(px, voi_spec(make_ds(px, WindowCenter=2048, WindowWidth=4096,
                                              photometric="MONOCHROME1")))
    assert np.abs(mono1.astype(int) + mono2.astype(int) - 255).max() <= 1


def test_no_voi_uses_percentile_window():
    px = _ramp(hi=1000)
    px[0, 0] = 4095  # a single hot pixel must not flatten the image
    out = to_display8(px, voi_spec(make_ds(px)))
    ref = to_uint8(to_unit(px.astype(np.float64), voi_spec(make_ds(px))))
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1
    assert out.std() > 50


def test_lookup_table_path_equals_float_path():
    px = _ramp(seed=3)
    spec = voi_spec(make_ds(px, RescaleSlope=0.5, RescaleIntercept=10, WindowCenter=900,
                            WindowWidth=700))
    assert np.array_equal(to_display8(px, spec), to_uint8(to_unit(px, spec)))


def test_render_sizes_and_no_upscale():
    px = _ramp(shape=(2500, 2048))
    out = render(px, voi_spec(make_ds(px[:8, :8])), long_side=1024, thumbnail_side=256)
    assert out.display.shape == (1024, round(2048 * 1024 / 2500))
    assert max(out.thumbnail.shape) == 256
    small = np.zeros((300, 200), np.uint8)
    assert resize_long_side(small, 1024).shape == (300, 200)


def test_clahe_changes_contrast_only_when_asked():
    px = (np.tile(np.linspace(1000, 1200, 256), (256, 1))).astype(int)
    spec = voi_spec(make_ds(px, WindowCenter=1100, WindowWidth=4000))
    plain = render(px, spec, long_side=256).display
    eq = render(px, spec, long_side=256, use_clahe=True).display
    assert eq.std() > plain.std()
    assert np.array_equal(clahe(plain), eq)
