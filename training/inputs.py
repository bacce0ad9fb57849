"""Radiograph pixels -> the model's input image, identical in training and inference.

One function, used by the training data mapper and by ``Detector.predict``,
so a model never sees pixels prepared differently from those it learned on:

* ``uint8`` (the platform's rendered PNGs) passes through unchanged;
* ``uint16`` (raw or 16-bit rendered values of unknown bit depth) is stretched
  linearly from its own min..max to 0..255, so a 12-bit and a 16-bit export
  of the same film look alike;
* grayscale is replicated to 3 channels (``cfg.CXR.INPUT_FORMAT = "GRAY3"``);
  a 3-channel input is assumed to be gray already and is averaged first, so
  colour PNG exports of a radiograph cannot shift the channels apart.

The result is float32 ``(H, W, 3)`` in 0..255; the model subtracts
``MODEL.PIXEL_MEAN`` and divides by ``MODEL.PIXEL_STD`` (saved with the
config), and resizing uses the same Detectron2 transform on float data in
both paths.
"""

from __future__ import annotations

import cv2
import numpy as np

from annotations.errors import DomainError


def to_model_image(image: np.ndarray) -> np.ndarray:
    """``(H, W)`` or ``(H, W, 3)`` uint8/uint16 -> float32 ``(H, W, 3)`` in 0..255."""
    arr = np.asarray(image)
    if arr.dtype not in (np.uint8, np.uint16):
        raise DomainError("invalid_image", f"expected uint8 or uint16 pixels, got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        gray = arr[:, :, :3].astype(np.float32).mean(axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 1:
        gray = arr[:, :, 0].astype(np.float32)
    elif arr.ndim == 2:
        gray = arr.astype(np.float32)
    else:
        raise DomainError("invalid_image", f"expected (H, W) or (H, W, 3), got {arr.shape}")
    if min(gray.shape) < 1:
        raise DomainError("invalid_image", "empty image")
    if arr.dtype == np.uint16:
        lo, hi = float(gray.min()), float(gray.max())
        gray = (gray - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(gray)
    return np.repeat(gray[:, :, None], 3, axis=2)


def read_image(path: str) -> np.ndarray:
    """A PNG/JPEG from disk, bit depth kept (8 or 16), as ``to_model_image`` expects."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DomainError("invalid_image", f"cannot read image {path}")
    if image.ndim == 3:
        image = image[:, :, :3]
    return image
