"""Loader: compressed transfer syntaxes decode; raster inputs are accepted."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit

from annotations.errors import DomainError
from annotations.imaging.loader import Limits, load_file
from annotations.imaging.synthetic import make_dataset, write_dataset


def _pixels(shape=(256, 200), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[: shape[0], : shape[1]]
    smooth = (np.sin(x / 17.0) + np.cos(y / 23.0) + 2) / 4
    return np.clip(smooth + rng.normal(0, 0.01, shape), 0, 1)


def test_jpeg_baseline_dicom_decodes(tmp_path: Path):
    img8 = (_pixels() * 255).astype(np.uint8)
    ok, jpg = cv2.imencode(".jpg", img8, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    ds = make_dataset(_pixels(), rng=np.random.default_rng(1), modality="CR", bits_stored=12)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = encapsulate([jpg.tobytes()])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.LossyImageCompression = "01"
    for kw in ("WindowCenter", "WindowWidth", "VOILUTSequence", "RescaleSlope",
               "RescaleIntercept"):
        if kw in ds:
            delattr(ds, kw)
    path = write_dataset(ds, tmp_path / "jpeg.dcm")
    loaded = load_file(path, Limits())
    assert loaded.pixels.shape == img8.shape
    assert np.abs(loaded.pixels.astype(int) - img8.astype(int)).mean() < 3


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.90"])
def test_lossless_compressed_dicom_round_trips(tmp_path: Path, syntax: str):
    from pydicom.uid import UID

    ds = make_dataset(_pixels(), rng=np.random.default_rng(2), modality="DX", bits_stored=12,
                      transfer_syntax=UID(syntax))
    path = write_dataset(ds, tmp_path / "c.dcm")
    loaded = load_file(path, Limits())
    plain = make_dataset(_pixels(), rng=np.random.default_rng(2), modality="DX",
                         bits_stored=12)
    assert np.array_equal(loaded.pixels, plain.pixel_array)
    assert loaded.pixel_hash == load_file(write_dataset(plain, tmp_path / "p.dcm"),
                                          Limits()).pixel_hash


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_raster_inputs(tmp_path: Path, ext: str):
    img = (_pixels() * 255).astype(np.uint8)
    path = tmp_path / f"x{ext}"
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))
    loaded = load_file(path, Limits())
    assert loaded.dataset is None and loaded.source_format == ext.strip(".").replace("jpg",
                                                                                      "jpeg")
    assert loaded.pixels.shape == img.shape


def test_limits_are_configurable(tmp_path: Path):
    ds = make_dataset(_pixels(), rng=np.random.default_rng(3), modality="CR")
    path = write_dataset(ds, tmp_path / "a.dcm")
    with pytest.raises(DomainError) as err:
        load_file(path, Limits(min_side=512))
    assert err.value.code == "implausible_size"
    with pytest.raises(DomainError) as err:
        load_file(path, Limits(modalities=("DX",)))
    assert err.value.code == "not_radiograph"
