"""From attenuation line integrals to a processed, "for presentation" radiograph.

Both anatomies produce ``P = integral of mu dl`` per detector pixel.  A real
digital chest system counts transmitted photons (Poisson noise, so dense
regions are noisier), takes the log, then applies vendor processing: a
large-kernel equalisation that flattens the lung/mediastinum range and an
edge enhancement that makes ribs and vessels crisp.  Reproducing those
steps, rather than just scaling ``P``, is what makes the synthetic images
look like clinical exports and gives viewers realistic histograms to window.
"""

from __future__ import annotations

import cv2
import numpy as np


def blur(img: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian blur; large kernels run on a downscaled copy (fast, same look)."""
    if sigma_px <= 0:
        return img
    factor = max(1, int(sigma_px // 6))
    if factor == 1:
        return cv2.GaussianBlur(img, (0, 0), sigma_px)
    h, w = img.shape
    small = cv2.resize(img, (max(1, w // factor), max(1, h // factor)),
                       interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma_px / factor)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def expose(path_integral: np.ndarray, rng: np.random.Generator, *,
           pixel_mm: float) -> np.ndarray:
    """Simulate exposure, detection and processing; return floats in [0, 1].

    1 means most attenuating (brightest in a MONOCHROME2 display).  Dose,
    equalisation strength, edge enhancement and the final brightness/contrast
    are drawn from ``rng`` so that a series of images varies like one from
    several rooms and technologists.
    """
    p = path_integral.astype(np.float32, copy=False)
    # Detector blur (MTF): about 0.15 mm.
    p = cv2.GaussianBlur(p, (0, 0), max(0.5, 0.15 / pixel_mm))
    # Photon counts per pixel for the unattenuated beam; scaled so a pixel of
    # any size gets the same noise per mm^2.
    n0 = float(rng.uniform(4000.0, 20000.0)) * (pixel_mm / 0.2) ** 2
    counts = n0 * np.exp(-p)
    noise = rng.standard_normal(p.shape, dtype=np.float32)
    counts = counts + np.sqrt(counts) * noise
    np.maximum(counts, 1.0, out=counts)
    v = np.log(n0 / counts).astype(np.float32)
    # Vendor processing: equalisation over ~35 mm and unsharp masking over ~2 mm.
    low = blur(v, 35.0 / pixel_mm)
    v = v - float(rng.uniform(0.15, 0.35)) * (low - float(np.median(low)))
    fine = blur(v, 2.0 / pixel_mm)
    v = v + float(rng.uniform(0.4, 1.0)) * (v - fine)
    sample = v[:: max(1, v.shape[0] // 256), :: max(1, v.shape[1] // 256)]
    lo, hi = np.percentile(sample, [0.5, 99.8])
    span = max(float(hi - lo), 1e-3)
    # Exposure/latitude variation: where the range lands in the output scale.
    floor = float(rng.uniform(0.02, 0.10))
    top = float(rng.uniform(0.80, 0.97))
    out = floor + (v - lo) / span * (top - floor)
    gamma = float(rng.uniform(0.85, 1.2))
    np.clip(out, 0.0, 1.0, out=out)
    return np.power(out, gamma, dtype=np.float32)
