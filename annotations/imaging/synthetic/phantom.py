"""Procedural chest phantom: analytic anatomy and lesions, rendered in milliseconds.

Anatomy is described in a patient frame in millimetres (``X`` from the
patient's right to left across the image, ``Y`` downward from the lung apex)
and rasterised straight into the final pixel grid through one affine
transform that carries the pose (rotation, scale, shift).  Every structure
contributes a path length times an attenuation difference to ``P``; shapes
get a dome-shaped thickness from a distance transform, which gives the soft
edges of real projections.  Lesions are rasterised through the same
transform, so their ground-truth boxes are the tight boxes of their masks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from annotations.imaging.synthetic import lesions as L
from annotations.imaging.synthetic.radiograph import blur, expose

MU_SOFT = 0.020  # 1/mm, soft tissue near 60 keV effective energy
MU_LUNG = 0.005  # aerated lung (about -750 HU)
DMU_LUNG = MU_SOFT - MU_LUNG
_SHIFT = 4  # fixed-point bits for sub-pixel polygon vertices


@dataclass
class Rendering:
    """A rendered radiograph: display-ready floats (1 = dense), boxes, pixel size, and
    (CT-derived films only) exact anatomy masks by structure name."""

    image: np.ndarray
    boxes: list[L.Box]
    pixel_mm: float
    masks: dict[str, np.ndarray] = field(default_factory=dict)


def _spline(points: list[tuple[float, float]], per_segment: int = 10) -> np.ndarray:
    """Closed Catmull-Rom curve through ``points``: smooth organ outlines."""
    p = np.asarray(points, dtype=np.float64)
    n = len(p)
    t = np.linspace(0.0, 1.0, per_segment, endpoint=False)[:, None]
    out = []
    for i in range(n):
        p0, p1, p2, p3 = p[(i - 1) % n], p[i], p[(i + 1) % n], p[(i + 2) % n]
        out.append(0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                          + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3))
    return np.concatenate(out)


class _Canvas:
    """Pixel grid plus the mm -> pixel pose transform."""

    def __init__(self, rows: int, cols: int, pixel_mm: float, theta: float,
                 centre_mm: tuple[float, float], centre_px: tuple[float, float]) -> None:
        self.rows, self.cols, self.px = rows, cols, pixel_mm
        c, s = math.cos(theta), math.sin(theta)
        k = 1.0 / pixel_mm
        x0, y0 = centre_mm
        cx, cy = centre_px
        # [col, row] = A @ [X, Y] + b
        self.a = np.array([[c * k, -s * k], [s * k, c * k]])
        self.b = np.array([cx, cy]) - self.a @ np.array([x0, y0])
        inv = np.linalg.inv(self.a)
        cols_ = np.arange(cols, dtype=np.float32)[None, :] - np.float32(self.b[0])
        rows_ = np.arange(rows, dtype=np.float32)[:, None] - np.float32(self.b[1])
        self.X = (inv[0, 0] * cols_ + inv[0, 1] * rows_).astype(np.float32)
        self.Y = (inv[1, 0] * cols_ + inv[1, 1] * rows_).astype(np.float32)

    def to_px(self, pts_mm: np.ndarray) -> np.ndarray:
        return np.asarray(pts_mm, dtype=np.float64) @ self.a.T + self.b

    def zeros(self) -> np.ndarray:
        return np.zeros((self.rows, self.cols), dtype=np.float32)

    def polygon(self, pts_mm: np.ndarray) -> np.ndarray:
        """uint8 mask (full image) of a filled polygon given in mm."""
        mask = np.zeros((self.rows, self.cols), dtype=np.uint8)
        pts = np.round(self.to_px(pts_mm) * (1 << _SHIFT)).astype(np.int32)
        cv2.fillPoly(mask, [pts], 1, cv2.LINE_8, shift=_SHIFT)
        return mask

    def _shape(self, pts_mm: np.ndarray, ramp_mm: float, depth_mm: float
               ) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray] | None:
        """Rasterise a polygon in its own padded window; return (image slices, mask, dome).

        Working in the polygon's bounding window keeps the many small shapes
        (vertebrae, pedicles) cheap; padding by the ramp keeps the thickness
        profile of shapes that leave the image identical to an unclipped one.
        """
        pts = self.to_px(pts_mm)
        pad = ramp_mm / self.px + 2
        x0 = int(max(math.floor(pts[:, 0].min()) - 2, -pad))
        y0 = int(max(math.floor(pts[:, 1].min()) - 2, -pad))
        x1 = int(min(math.ceil(pts[:, 0].max()) + 3, self.cols + pad))
        y1 = int(min(math.ceil(pts[:, 1].max()) + 3, self.rows + pad))
        cx0, cy0 = max(x0, 0), max(y0, 0)
        cx1, cy1 = min(x1, self.cols), min(y1, self.rows)
        if cx1 <= cx0 or cy1 <= cy0:
            return None
        mask = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
        ipts = np.round((pts - [x0, y0]) * (1 << _SHIFT)).astype(np.int32)
        cv2.fillPoly(mask, [ipts], 1, cv2.LINE_8, shift=_SHIFT)
        d = cv2.distanceTransform(mask, cv2.DIST_L2, 3) * np.float32(self.px / ramp_mm)
        np.minimum(d, 1.0, out=d)
        dome = np.float32(depth_mm) * np.sqrt(1.0 - (1.0 - d) ** 2)
        inner = (slice(cy0 - y0, cy1 - y0), slice(cx0 - x0, cx1 - x0))
        return (slice(cy0, cy1), slice(cx0, cx1)), mask[inner], dome[inner]

    def add(self, target: np.ndarray, pts_mm: np.ndarray, ramp_mm: float,
            depth_mm: float) -> None:
        """Add the dome thickness of a polygon into ``target``."""
        got = self._shape(np.asarray(pts_mm, dtype=np.float64), ramp_mm, depth_mm)
        if got is not None:
            target[got[0]] += got[2]

    def shape(self, pts_mm: np.ndarray, ramp_mm: float, depth_mm: float
              ) -> tuple[np.ndarray, np.ndarray]:
        """Full-image (mask, dome thickness) of a polygon."""
        mask = np.zeros((self.rows, self.cols), dtype=np.uint8)
        dome = self.zeros()
        got = self._shape(np.asarray(pts_mm, dtype=np.float64), ramp_mm, depth_mm)
        if got is not None:
            mask[got[0]] = got[1]
            dome[got[0]] = got[2]
        return mask, dome

    @staticmethod
    def ellipse_pts(centre: tuple[float, float], axes: tuple[float, float],
                    angle_deg: float = 0.0) -> np.ndarray:
        t = np.linspace(0, 2 * math.pi, 72, endpoint=False)
        a = math.radians(angle_deg)
        ex, ey = axes[0] * np.cos(t), axes[1] * np.sin(t)
        return np.stack([centre[0] + ex * math.cos(a) - ey * math.sin(a),
                         centre[1] + ex * math.sin(a) + ey * math.cos(a)], axis=1)

    def ellipse(self, centre: tuple[float, float], axes: tuple[float, float],
                angle_deg: float = 0.0) -> np.ndarray:
        return self.polygon(self.ellipse_pts(centre, axes, angle_deg))

    def polyline(self, canvas: np.ndarray, pts_mm: np.ndarray, width_mm: float,
                 value: float) -> None:
        pts = np.round(self.to_px(pts_mm) * (1 << _SHIFT)).astype(np.int32)
        thick = max(1, int(round(width_mm / self.px)))
        cv2.polylines(canvas, [pts], False, value, thick, cv2.LINE_AA, shift=_SHIFT)


def _mirror(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    return [(-x, y) for x, y in points]


def _lung_outline(w: float, h: float, side: int, rng: np.random.Generator,
                  dome_drop: float) -> list[tuple[float, float]]:
    """Control points of one lung (side -1: patient's right, +1: left)."""
    base = [(-0.28, -0.01), (-0.46, 0.02), (-0.64, 0.10), (-0.79, 0.26), (-0.89, 0.46),
            (-0.94, 0.68), (-0.965, 0.88), (-0.955, 1.0), (-0.83, 0.94), (-0.64, 0.865),
            (-0.44, 0.845), (-0.27, 0.87), (-0.13, 0.93), (-0.10, 0.72), (-0.085, 0.48),
            (-0.11, 0.27), (-0.16, 0.10)]
    pts = []
    for i, (x, y) in enumerate(base):
        jx, jy = rng.normal(0, 0.012, 2)
        yy = y + (dome_drop if 7 <= i <= 12 else 0.0)
        pts.append((-side * (x + jx) * w, (yy + jy) * h))
    return pts


def _ribs(cv: _Canvas, w: float, h: float, side: int, rng: np.random.Generator) -> np.ndarray:
    """Posterior (sharp, dense) and anterior (faint, wide) rib arcs of one side."""
    post = cv.zeros()
    ant = cv.zeros()
    spacing = h * rng.uniform(0.088, 0.10)
    t = np.linspace(0.0, 1.0, 24)
    for i in range(11):
        y0 = -14.0 + i * spacing
        reach = w * min(0.97, 0.42 + 0.2 * i)
        y_lat = y0 + (0.07 + 0.012 * i) * h
        xs = side * (20.0 + (reach - 20.0) * t)
        ys = y0 - 0.035 * h * np.sin(math.pi * t) + (y_lat - y0) * t**2
        cv.polyline(post, np.stack([xs, ys], 1), 9.0 + 0.3 * i, 1.0)
        if i >= 1:
            end_x = w * (0.22 + 0.02 * i)
            end_y = y0 + (0.30 + 0.01 * i) * h
            xa = side * (reach - (reach - end_x) * t)
            ya = y_lat + (end_y - y_lat) * t - 0.03 * h * np.sin(math.pi * t)
            cv.polyline(ant, np.stack([xa, ya], 1), 13.0, 1.0)
    sigma = max(0.6, 1.2 / cv.px)
    post = blur(post, sigma)
    # Cortical rims: the edges of a tubular bone project brighter than its centre.
    rim = post - blur(post, max(1.0, 3.0 / cv.px))
    ant = blur(ant, sigma * 2)
    return 0.16 * post + 0.12 * np.maximum(rim, 0) + 0.07 * ant


def _vessels(cv: _Canvas, hilum: tuple[float, float], side: int,
             rng: np.random.Generator) -> np.ndarray:
    """Branching vascular markings radiating from a hilum."""
    out = cv.zeros()
    stack = []
    for _ in range(9):
        ang = math.radians(rng.uniform(-80, 110)) if side > 0 else math.radians(
            180 - rng.uniform(-80, 110))
        stack.append((hilum, ang, 5.0, 0))
    while stack:
        (x, y), ang, width, gen = stack.pop()
        length = rng.uniform(25, 45) * (0.88**gen)
        nx, ny = x + length * math.cos(ang), y + length * math.sin(ang)
        cv.polyline(out, np.array([[x, y], [nx, ny]]), width, 0.05 + 0.035 * width)
        if gen < 5 and width > 1.0:
            for turn in (-1, 1):
                stack.append(((nx, ny), ang + turn * rng.uniform(0.2, 0.6), width * 0.72,
                              gen + 1))
    return blur(out, max(0.5, 0.8 / cv.px))


def _pick(mask: np.ndarray, rng: np.random.Generator) -> tuple[int, int] | None:
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return None
    k = int(idx[int(rng.integers(idx.size))])
    return k // mask.shape[1], k % mask.shape[1]


def render_phantom(rows: int, cols: int, findings: list[str],
                   rng: np.random.Generator) -> Rendering:
    """Render one chest radiograph with the given finding kinds."""
    w = float(rng.uniform(125, 160))  # inner half-width of the thorax (mm)
    h = float(rng.uniform(215, 275))  # apex to costophrenic angle (mm)
    fov_w = 2 * w + float(rng.uniform(70, 150))
    px = max(fov_w / cols, (h + 130) / rows)
    theta = math.radians(float(rng.uniform(-4, 4)))
    top_margin = float(rng.uniform(0.05, 0.14)) * rows * px
    centre_px = (cols / 2 + rng.uniform(-0.04, 0.04) * cols, rows / 2)
    centre_mm = (0.0, -top_margin + rows * px / 2)
    cv = _Canvas(rows, cols, px, theta, centre_mm, centre_px)

    # Body and arms: soft tissue.
    body_r = [(-50, -260), (-48, -75), (-80, -45), (-(w + 25), -30), (-(w + 32), 5),
              (-(w + 18), 0.3 * h), (-(w + 14), 0.7 * h), (-(w + 22), h + 80),
              (-(w + 32), h + 400)]
    body_mask, t_body = cv.shape(_spline(body_r + _mirror(body_r)[::-1], 6), 80.0,
                                 float(rng.uniform(190, 250)))
    soft = t_body.copy()
    for side in (-1, 1):
        arm = [(side * (w + 40), -35), (side * (w + 100), -15), (side * (w + 112), h + 400),
               (side * (w + 38), h + 400)]
        cv.add(soft, np.array(arm), 35.0, 85.0)
    p = MU_SOFT * soft
    bone = cv.zeros()
    for side in (-1, 1):
        cv.add(bone, cv.ellipse_pts((side * (w + 55), -12.0), (26, 30)), 12, 0.45)

    # Lungs, heart, aortic knob, hila.
    drop = float(rng.uniform(0.02, 0.06))
    lung_masks = {}
    lung_depth = {}
    lmax = float(rng.uniform(130, 170))
    for side in (-1, 1):
        outline = _spline(_lung_outline(w, h, side, rng, drop if side > 0 else 0.0))
        lung_masks[side], lung_depth[side] = cv.shape(outline, 45.0, lmax)
    lung_any = (lung_masks[-1] | lung_masks[1]).astype(bool)

    big_heart = L.CARDIOMEGALY in findings
    ctr = float(rng.uniform(0.58, 0.68) if big_heart else rng.uniform(0.42, 0.50))
    ax = ctr * 0.95 * w
    ay = 0.70 * ax
    heart_c = (0.12 * w + 0.55 * (ax - 0.44 * w), 0.86 * h - 0.45 * ay)
    heart_pts = cv.ellipse_pts(heart_c, (ax, ay), float(rng.uniform(-28, -18)))
    heart_mask, heart = cv.shape(heart_pts, 35.0, 160.0)

    big_aorta = L.AORTIC in findings
    rk = float(rng.uniform(24, 30) if big_aorta else rng.uniform(12, 16))
    knob_c = (0.12 * w + 0.8 * rk, 0.22 * h)
    knob_mask, knob = cv.shape(cv.ellipse_pts(knob_c, (rk, rk * 0.9)), rk * 0.8, 70.0)
    mediastinum = heart + knob
    # Superior mediastinum (vessels) between the upper lungs, and the hila.
    upper = [(-0.15 * w, -30), (0.15 * w, -30), (0.19 * w, 0.3 * h), (0.14 * w, 0.6 * h),
             (-0.14 * w, 0.6 * h), (-0.19 * w, 0.3 * h)]
    cv.add(mediastinum, _spline(upper, 8), 25.0, 70.0)
    for side in (-1, 1):
        cv.add(mediastinum, cv.ellipse_pts((side * 0.2 * w, 0.40 * h), (14, 26)), 14.0, 25.0)
    air = lung_depth[-1] + lung_depth[1]
    lung_eff = np.maximum(air - mediastinum, 0.1 * air)

    boxes: list[L.Box] = []
    dense = cv.zeros()  # lesion attenuation added on top
    no_vessels = cv.zeros()

    def add_box(kind: str, mask: np.ndarray) -> None:
        box = L.mask_box(kind, mask)
        if box is not None:
            boxes.append(box)

    if big_heart:
        add_box(L.CARDIOMEGALY, heart_mask.astype(bool))
    if big_aorta:
        add_box(L.AORTIC, knob_mask.astype(bool))

    for kind in findings:
        side = -1 if rng.random() < 0.5 else 1
        lung_side = lung_masks[side].astype(bool)
        if kind == L.NODULE:
            r = float(rng.uniform(5, 13) if rng.random() < 0.6 else rng.uniform(15, 30))
            ok = lung_side & (lung_depth[side] > 0.6 * lmax) & (heart < 20) & (knob < 5)
            at = _pick(ok, rng)
            if at is None:
                continue
            xc, yc = float(cv.X[at]), float(cv.Y[at])
            d2 = (cv.X - xc) ** 2 + (cv.Y - yc) ** 2
            mask = d2 < r * r
            chord = 2.0 * np.sqrt(np.maximum(r * r - d2, 0.0))
            dense += 0.017 * chord
            add_box(kind, mask)
        elif kind == L.CONSOLIDATION:
            ok = lung_side & (lung_depth[side] > 0.5 * lmax) & (cv.Y > 0.2 * h)
            at = _pick(ok, rng)
            if at is None:
                continue
            xc, yc = float(cv.X[at]), float(cv.Y[at])
            blob = np.zeros_like(heart_mask)
            for _ in range(int(rng.integers(3, 6))):
                c = (xc + rng.normal(0, 14), yc + rng.normal(0, 14))
                blob |= cv.ellipse(c, (rng.uniform(14, 30), rng.uniform(10, 24)),
                                   float(rng.uniform(0, 180)))
            patch = blur(blob.astype(np.float32), 4.0 / px)
            patch *= lung_side
            fill = float(rng.uniform(0.5, 0.8))
            mottle = 0.8 + 0.4 * cv2.GaussianBlur(
                rng.random((rows, cols), dtype=np.float32), (0, 0), 2.0 / px)
            dense += DMU_LUNG * fill * lung_eff * patch * mottle
            add_box(kind, patch > 0.05)
        elif kind == L.EFFUSION:
            level = h * float(rng.uniform(0.62, 0.82)) + (drop * h if side > 0 else 0.0)
            lateral = np.clip(cv.X * side / w, 0.0, 1.0)
            surface = level - float(rng.uniform(25, 60)) * lateral**2
            ramp = np.clip((cv.Y - surface) / 12.0 + 1.0, 0.0, 1.0)
            fluid = ramp * lung_side
            dense += DMU_LUNG * lung_depth[side] * fluid * 0.95
            no_vessels = np.maximum(no_vessels, fluid)
            add_box(kind, fluid > 0.02)
        elif kind == L.PNEUMOTHORAX:
            width = float(rng.uniform(10, 28))
            dist = cv2.distanceTransform(lung_masks[side], cv2.DIST_L2, 3) * np.float32(px)
            region = (cv.Y < h * float(rng.uniform(0.55, 0.8))) & (
                ((cv.X * side) > 0.35 * w) | (cv.Y < 0.12 * h))
            rim = lung_side & (dist < width) & region
            rim_f = rim.astype(np.float32)
            # Air without lung tissue in the rim, a thin visceral pleural line inside it.
            dense -= 0.6 * MU_LUNG * lung_depth[side] * rim_f
            line = lung_side & (np.abs(dist - width) < 0.8) & region
            dense += 0.07 * blur(line.astype(np.float32), 0.5 / px + 0.3)
            no_vessels = np.maximum(no_vessels, rim_f)
            add_box(kind, rim)

    p -= DMU_LUNG * lung_eff
    p += dense
    # Trachea and main bronchi: an air column.
    air_col = cv.zeros()
    cv.add(air_col, np.array([(-8, -200), (8, -200), (7, 0.30 * h), (-9, 0.30 * h)]), 6.0, 16.0)
    for side in (-1, 1):
        cv.add(air_col, np.array([(-6, 0.28 * h), (6, 0.28 * h), (side * 0.2 * w + 5, 0.38 * h),
                                  (side * 0.2 * w - 5, 0.40 * h)]), 4.0, 8.0)
    # Gastric air bubble under the left dome.
    cv.add(air_col, cv.ellipse_pts((0.45 * w, (0.97 + drop) * h + 28), (30, 17)), 10.0, 25.0)
    p -= DMU_LUNG * air_col

    # Vascular markings, only inside aerated lung.
    vessels = cv.zeros()
    for side in (-1, 1):
        vessels += _vessels(cv, (side * 0.2 * w, 0.40 * h), side, rng)
    frac = np.clip(lung_eff / (0.5 * lmax), 0.0, 1.0) * (1.0 - no_vessels)
    p += 1.6 * vessels * frac * lung_any

    # Skeleton: spine, ribs, clavicles, scapulae.
    hv = float(rng.uniform(0.075, 0.085)) * h
    y = -120.0
    while y < h + 300:
        half = 18.0 + 0.03 * max(y, 0.0)
        rect = np.array([(-half, y), (half, y), (half, y + hv), (-half, y + hv)])
        cv.add(bone, rect, 14.0, 0.2)
        for side in (-1, 1):
            cv.add(bone, cv.ellipse_pts((side * (half - 6), y + 0.3 * hv), (4.5, 6.5)), 3.0, 0.12)
        y += hv + 0.14 * hv
    for side in (-1, 1):
        bone += 1.5 * _ribs(cv, w, h, side, rng)
        clav = [(side * 18.0, 0.14 * h), (side * 0.35 * w, 0.10 * h),
                (side * 0.75 * w, 0.07 * h), (side * (w + 25.0), -0.05 * h)]
        clav_canvas = cv.zeros()
        curve = _spline(clav + clav[::-1][1:-1], 8)[: 8 * 3]
        cv.polyline(clav_canvas, curve, 14.0, 1.0)
        bone += 0.3 * blur(clav_canvas, max(0.6, 1.5 / px))
        scap = np.array([(side * 0.72 * w, -18.0), (side * 1.02 * w, -22.0),
                         (side * 0.88 * w, 0.42 * h)])
        cv.add(bone, scap, 8.0, 0.08)
    p += bone * (body_mask > 0)

    # Low-frequency parenchymal mottle.
    small = rng.standard_normal((max(8, rows // 16), max(8, cols // 16))).astype(np.float32)
    p += 0.03 * cv2.resize(small, (cols, rows), interpolation=cv2.INTER_CUBIC) * lung_any

    image = expose(p, rng, pixel_mm=px)
    return Rendering(image=image, boxes=boxes, pixel_mm=px)
