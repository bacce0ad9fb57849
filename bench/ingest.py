"""Ingest throughput for 2048x2500 16-bit radiographs, against a floor.

    python -m bench.ingest [--n 24] [--keep]

The floor is measured on the same files in the same run: pydicom reads and
decodes the pixels, and OpenCV encodes an 8-bit PNG of them at full resolution
(same PNG compression level as the pipeline).  Because the pipeline encodes a
1024-pixel display image instead, a stricter floor (decode + downscale +
display PNG, nothing else) is printed too.  The pipeline
is the real per-file task (``ingest_item_process``: validation, decode,
de-identification, VOI rendering, display + thumbnail + de-identified DICOM
written atomically, database rows).  Both run in worker processes; the
database is a SQLite file (or DATABASE_URL, if set).

Printed last: pipeline/floor per core and the 2-worker / 1-worker speedup.
Targets: >= 0.85 and >= 1.7x.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path


def _setup_django(data_dir: str) -> None:
    os.environ["CXR_DATA_DIR"] = data_dir
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cxr_platform.settings")
    import django

    django.setup()


def _floor_one(path: str) -> None:
    import cv2
    import numpy as np
    import pydicom

    ds = pydicom.dcmread(path)
    px = ds.pixel_array
    img8 = (px >> max(0, int(ds.BitsStored) - 8)).astype(np.uint8)
    ok, _ = cv2.imencode(".png", img8, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    assert ok


def _strict_floor_one(path: str) -> None:
    """Decode, then only the display derivative: downscale and encode (no full-res PNG)."""
    import cv2
    import numpy as np
    import pydicom

    ds = pydicom.dcmread(path)
    px = ds.pixel_array
    img8 = (px >> max(0, int(ds.BitsStored) - 8)).astype(np.uint8)
    h, w = img8.shape
    scale = 1024 / max(h, w)
    small = cv2.resize(img8, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    ok, _ = cv2.imencode(".png", small, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    assert ok


def _pipeline_one(item_id: int) -> str:
    from annotations.services.ingest import ingest_item_process

    return ingest_item_process(item_id=item_id).status


def _init_worker(data_dir: str) -> None:
    import cv2

    cv2.setNumThreads(1)  # one core per worker: measure per-core throughput
    _setup_django(data_dir)


def _timed_pool(func, args, workers: int, data_dir: str) -> tuple[float, list]:
    ctx = get_context("spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(data_dir,)) as pool:
        pool.map(_noop, range(workers * 2))  # warm up: imports done before timing
        t0 = time.perf_counter()
        out = pool.map(func, args, chunksize=1)
        return time.perf_counter() - t0, out


def _noop(_: int) -> None:
    return None


def _stage(project_slug: str, files: list[Path]) -> list[int]:
    from annotations.services.ingest import ingest_batch_create
    from annotations.services.projects import project_create

    project = project_create(name=project_slug, slug=project_slug)
    batch = ingest_batch_create(project=project, inputs=files)
    return list(batch.items.order_by("seq").values_list("id", flat=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    data_dir = str(work / "var")
    os.environ.setdefault("OPENCV_FOR_THREADS_NUM", "1")
    _setup_django(data_dir)
    import cv2
    from django.core.management import call_command

    from annotations.imaging.synthetic import generate_studies

    cv2.setNumThreads(1)
    call_command("migrate", verbosity=0)
    src = work / "dicom"
    t0 = time.perf_counter()
    res = generate_studies(src, args.n, seed=11, size=(2500, 2048), compressed_fraction=0.0)
    print(f"generated {len(res.files)} files of 2048x2500 in {time.perf_counter() - t0:.1f} s")
    files = [str(p) for p in res.files]

    floor_s, _ = _timed_pool(_floor_one, files, 1, data_dir)
    floor_rate = len(files) / floor_s
    print(f"floor (decode + full-resolution PNG encode), 1 worker: {floor_rate:.2f} images/s")
    strict_s, _ = _timed_pool(_strict_floor_one, files, 1, data_dir)
    strict_rate = len(files) / strict_s
    print(f"strict floor (decode + 1024-px display PNG only), 1 worker: "
          f"{strict_rate:.2f} images/s")

    rates = {}
    for workers in (1, 2):
        ids = _stage(f"bench-{workers}", res.files)
        secs, statuses = _timed_pool(_pipeline_one, ids, workers, data_dir)
        bad = [s for s in statuses if s != "imported"]
        if bad:
            print(f"pipeline did not import every file: {bad}", file=sys.stderr)
            return 1
        rates[workers] = len(ids) / secs
        print(f"pipeline, {workers} worker(s): {rates[workers]:.2f} images/s")

    per_core = rates[1] / floor_rate
    scaling = rates[2] / rates[1]
    print(f"two workers vs one: {scaling:.2f}x (target >= 1.7x, {os.cpu_count()} cores)")
    print(f"pipeline/strict floor per core: {rates[1] / strict_rate:.2f}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    print(f"pipeline/floor per core: {per_core:.2f} (target >= 0.85)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
