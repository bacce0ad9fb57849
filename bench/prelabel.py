"""Pre-labelling speed through the platform, against a bare Detectron2 forward.

    python -m bench.prelabel [--n 24] [--batch 4] [--preset tiny|r50_fpn]
                             [--repeats 3] [--requests 30] [--threads 1] [--keep]
                             [--device cuda] [--amp] [--display 1024]

On a GPU (``--device cuda --preset r50_fpn --display 1024 --n 256 --batch 8``), ``--amp``
runs both throughput sides in float16 autocast, as the platform's pre-labelling does by
default there (``CXR_PRELABEL_AMP``); the ``/predict`` comparison stays float32 on both
sides (the ML backend does not use AMP).

About 40 s with the defaults (tiny) on 2 CPU cores; ``--preset r50_fpn`` runs a
1024-pixel input at ~5 s an image on one CPU thread, so its CPU defaults are
smaller (4 images, 2 repetitions, 6 requests: ~4 minutes).

Why: the platform wraps the detector in a task (model version loaded and
checksum-verified per run, display PNGs read from storage, preprocessing,
``Prediction`` rows with per-class probabilities and uncertainty scores
written, run progress updated).  That wrapping should cost little next to the
model itself; the target is at most 10 % below a bare forward.

What is measured, in one process and on the same images:

* bare forward: the same model version (``Detector``'s ``torch.nn.Module``),
  ``model(inputs)`` under ``torch.no_grad`` over inputs prepared once, before
  timing, exactly as ``Detector`` prepares them (grouped by shape, same batch
  size): what would remain if the platform did nothing else;
* platform: ``prelabel_run_execute`` over the project's images, a fresh
  ``PrelabelRun`` each repetition (rows are updated, never duplicated);
* ``/predict``: the ML backend (``ml_backend.app.Backend``) served over HTTP on
  loopback, one task per request whose image is fetched from a local file
  server, latency seen by the client; against one bare single-image forward,
  the two interleaved request by request so both see the same machine load.

Setup: a temporary data dir and SQLite database, a project whose display
images have a 256-pixel long side (``--display``; keeps CPU time bounded),
``--n`` synthetic radiographs ingested by the real ingest task, and a
randomly initialised model version (speed does not depend on training)
published with ``save_model_version`` and promoted.  Its score threshold is 0
and it keeps ``--detections`` boxes per image, so every image stores boxes
with probabilities (the storage path is exercised as with a trained model).

Both throughput sides are warmed up once, then repeated ``--repeats`` times
interleaved; the best repetition of each is compared (the median is printed
too).  Torch intra-op threads are fixed (``--threads``, default 1: the machine
is shared and oversubscribed threads make timings erratic); OpenCV uses one.
A breakdown of the platform path (model load, PNG reads, predict, row writes)
is printed to show where any overhead goes.  Printed last: the overhead.
The command exits 0 when a target is missed, and says so.
"""

from __future__ import annotations

import argparse
import inspect
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

OVERHEAD_TARGET = 0.10


def _setup_django(data_dir: str) -> None:
    os.environ["CXR_DATA_DIR"] = data_dir
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cxr_platform.settings")
    import django

    django.setup()


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _stage_images(n: int, display: int, work: Path):
    """A project with ``n`` ingested synthetic radiographs; returns (project, images)."""
    from annotations.imaging.synthetic import generate_studies
    from annotations.models import Image
    from annotations.services.ingest import ingest_batch_create, ingest_item_process
    from annotations.services.projects import project_create

    t0 = time.perf_counter()
    res = generate_studies(work / "dicom", n, seed=7, size=(1024, 896), compressed_fraction=0.0)
    project = project_create(name="bench-prelabel", slug="bench-prelabel",
                             display_long_side=display)
    batch = ingest_batch_create(project=project, inputs=res.files)
    for item_id in batch.items.order_by("seq").values_list("id", flat=True):
        ingest_item_process(item_id=item_id)
    images = list(Image.objects.filter(project=project).order_by("id"))
    if len(images) != n:
        raise SystemExit(f"only {len(images)} of {n} synthetic images were ingested")
    print(f"{n} synthetic 896x1024 radiographs ingested, display {images[0].display_width}x"
          f"{images[0].display_height} px, in {time.perf_counter() - t0:.1f} s")
    return project, images


def _publish_model(project, preset: str, detections: int, device: str) -> Path:
    """A randomly initialised model version, saved and promoted; returns its folder."""
    import torch
    from django.conf import settings

    import training.modeling  # noqa: F401  (registers the ROI heads; patches detectron2)
    from annotations.models import ModelVersion
    from annotations.services.model_registry import version_promote
    from training.config import build_config
    from training.detector import save_model_version

    # isort: split
    from detectron2.modeling import build_model

    names = list(project.label_classes.filter(image_level=False).order_by("class_id")
                 .values_list("name", flat=True))
    cfg = build_config(len(names), preset=preset, class_names=names, device=device)
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0  # random weights: keep boxes anyway
    cfg.TEST.DETECTIONS_PER_IMAGE = detections
    torch.manual_seed(0)
    model = build_model(cfg)
    version_dir = Path(settings.MODEL_DIR) / "bench-v1"
    _, digest = save_model_version(model, cfg, version_dir)
    # promoted in the registry, the only truth about what serves a project
    version = ModelVersion.objects.create(project=project, name="bench-v1", sha256=digest,
                                          config=cfg.dump())
    version_promote(version=version, reason="bench")
    return version_dir


def _bare_chunks(detector, arrays, batch: int) -> list[list[dict]]:
    """Inputs prepared as ``Detector.predict`` prepares them, grouped by shape, batched."""
    prepared = [detector._prepare(a) for a in arrays]
    groups: dict[tuple[int, ...], list[dict]] = {}
    for item in prepared:
        groups.setdefault(tuple(item["image"].shape), []).append(item)
    return [g[i:i + batch] for g in groups.values() for i in range(0, len(g), batch)]


def _time_bare(model, chunks, device: str, autocast) -> tuple[float, int]:
    import torch

    boxes = 0
    _sync(device)
    t0 = time.perf_counter()
    with torch.no_grad(), autocast():
        for chunk in chunks:
            out = model(chunk)
            boxes += sum(len(o["instances"]) for o in out)
    _sync(device)
    return time.perf_counter() - t0, boxes


def _time_platform(project, batch: int) -> float:
    from annotations.services.prelabeling import prelabel_run_create, prelabel_run_execute

    run = prelabel_run_create(project=project, enqueue=False)
    t0 = time.perf_counter()
    run = prelabel_run_execute(run_id=run.pk, batch_size=batch)
    seconds = time.perf_counter() - t0
    if run.status != "done" or run.done != run.total:
        raise SystemExit(f"pre-labelling run ended {run.status} ({run.reason})")
    return seconds


def _breakdown(project, images, version_dir: Path, batch: int,
               device: str) -> tuple[dict[str, float], float]:
    """The platform path's steps, timed one by one (same calls, same order), and
    separately the preprocessing that ``predict`` includes."""
    from annotations.services.prelabeling import _prediction, _read_display, _store
    from training.detector import Detector

    out = {}
    t0 = time.perf_counter()
    detector = Detector.from_dir(version_dir)  # as prelabel_run_execute loads it (once)
    out["load model version (checksum, build, weights)"] = time.perf_counter() - t0
    out["read display PNGs"] = out["predict (prepare, forward, to numpy)"] = 0.0
    out["store Prediction rows (+ uncertainty)"] = 0.0
    prepare = 0.0
    for start in range(0, len(images), batch):
        part = images[start:start + batch]
        t0 = time.perf_counter()
        arrays = [_read_display(i) for i in part]
        t1 = time.perf_counter()
        dets = detector.predict(arrays)
        _sync(device)
        t2 = time.perf_counter()
        _store([_prediction(image, "bench-v1", det, detector.class_names)
                for image, det in zip(part, dets, strict=True)])
        t3 = time.perf_counter()
        out["read display PNGs"] += t1 - t0
        out["predict (prepare, forward, to numpy)"] += t2 - t1
        out["store Prediction rows (+ uncertainty)"] += t3 - t2
        t0 = time.perf_counter()
        for array in arrays:  # not part of the total: predict already did this
            detector._prepare(array)
        prepare += time.perf_counter() - t0
    return out, prepare


def _threads() -> str:
    import torch

    n = torch.get_num_threads()
    return f"{n} torch thread{'s' if n != 1 else ''}"


def _percentiles(values: list[float]) -> tuple[float, float]:
    import numpy as np

    arr = np.asarray(values) * 1000.0
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def _predict_latency(images, model, detector, requests_n: int, device: str, threshold: float,
                     warmup: int):
    """Client-side /predict latency and bare single-image forward latency, interleaved."""
    import cv2
    import requests
    import torch
    from django.conf import settings

    from ml_backend.app import Backend
    from ml_backend.settings import BackendSettings
    from tests.ml_backend.servers import serve_files, serve_wsgi

    user, password = "bench", "bench-secret"
    backend = Backend(BackendSettings(
        model_dir=Path(settings.MODEL_DIR), username=user, password=password,
        platform_url="http://127.0.0.1:9", platform_token="t", score_threshold=threshold,
        device=device))
    singles = [_bare_chunks(detector, [cv2.imread(str(Path(settings.MEDIA_ROOT) /
                                                      i.display_path), cv2.IMREAD_GRAYSCALE)],
                            1)[0] for i in images]
    served, bare, regions = [], [], []
    with serve_files(Path(settings.MEDIA_ROOT)) as files, serve_wsgi(backend) as api, \
            requests.Session() as http:
        http.auth = (user, password)

        def one(k: int) -> float:
            body = {"tasks": [{"id": k, "data": {"image": f"{files}/{images[k].display_path}"}}]}
            t0 = time.perf_counter()
            resp = http.post(f"{api}/predict", json=body, timeout=120)
            seconds = time.perf_counter() - t0
            results = resp.json().get("results") if resp.status_code == 200 else None
            if not results or len(results) != 1:
                raise SystemExit(f"/predict answered {resp.status_code}: {resp.text[:200]}")
            regions.append(len(results[0]["result"]))
            return seconds

        for k in range(warmup):  # warm-up: the first request loads the model version
            one(k % len(images))
        regions.clear()
        with torch.no_grad():
            for k in range(warmup):
                model(singles[k % len(images)])
            for r in range(requests_n):
                k = r % len(images)
                served.append(one(k))
                _sync(device)
                t0 = time.perf_counter()
                model(singles[k])
                _sync(device)
                bare.append(time.perf_counter() - t0)
    return served, bare, statistics.mean(regions)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, help="images (default 24 tiny, 4 r50_fpn)")
    parser.add_argument("--batch", type=int, default=4, help="pre-label batch size")
    parser.add_argument("--preset", choices=("tiny", "r50_fpn"), default="tiny")
    parser.add_argument("--repeats", type=int, help="default 3 tiny, 2 r50_fpn")
    parser.add_argument("--requests", type=int, help="/predict requests timed "
                        "(default 30 tiny, 6 r50_fpn)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--display", type=int, default=256, help="display long side, px")
    parser.add_argument("--detections", type=int, default=20, help="boxes kept per image")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--amp", action="store_true",
                        help="float16 autocast on cuda, in the bare forward and the platform "
                             "alike (CXR_PRELABEL_AMP); no effect on cpu")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir")
    args = parser.parse_args(argv)
    big = args.preset == "r50_fpn" and args.device == "cpu"  # ~seconds an image on CPU
    args.n = args.n or (4 if big else 24)
    args.repeats = args.repeats or (2 if big else 3)
    args.requests = args.requests or (6 if big else 30)

    work = Path(tempfile.mkdtemp(prefix="bench-prelabel-"))
    os.environ.setdefault("OPENCV_FOR_THREADS_NUM", "1")
    os.environ["CXR_PRELABEL_AMP"] = "true" if args.amp else "false"
    _setup_django(str(work / "var"))
    import cv2
    import torch
    from django.conf import settings
    from django.core.management import call_command

    from annotations.models import Prediction
    from training.detector import Detector

    cv2.setNumThreads(1)
    torch.set_num_threads(args.threads)
    device_name = "CPU" if args.device == "cpu" else torch.cuda.get_device_name(0)
    try:
        call_command("migrate", verbosity=0)
        project, images = _stage_images(args.n, args.display, work)
        version_dir = _publish_model(project, args.preset, args.detections, args.device)
        inner = inspect.signature(Detector.__init__).parameters["batch_size"].default
        detector = Detector.from_dir(version_dir, device=args.device, batch_size=args.batch,
                                     amp=args.amp)
        model = detector.model
        arrays = [cv2.imread(str(Path(settings.MEDIA_ROOT) / i.display_path),
                             cv2.IMREAD_GRAYSCALE) for i in images]
        chunks = _bare_chunks(detector, arrays, args.batch)
        shape = tuple(chunks[0][0]["image"].shape)
        print(f"model: {args.preset}, random init, {args.detections} boxes kept per image, "
              f"model input {shape[2]}x{shape[1]}, device {device_name}, "
              f"{_threads()}, batch {args.batch}, AMP {'on' if detector.amp else 'off'}")
        if args.batch > inner:
            print(f"note: prelabel_run_execute loads Detector with its default batch_size "
                  f"({inner}), so its forward passes hold at most {inner} images")

        bare_s, plat_s = [], []
        _time_bare(model, chunks, args.device, detector.autocast)  # warm-up
        _time_platform(project, args.batch)  # warm-up (imports, caches, DB)
        boxes = 0
        load_s = []  # a model load, timed alongside (the platform pays it once per worker)
        for _ in range(args.repeats):
            seconds, boxes = _time_bare(model, chunks, args.device, detector.autocast)
            bare_s.append(seconds)
            plat_s.append(_time_platform(project, args.batch))
            t0 = time.perf_counter()
            Detector.from_dir(version_dir)
            load_s.append(time.perf_counter() - t0)
        stored = Prediction.objects.filter(image__project=project)
        if stored.count() != len(images):
            print(f"expected {len(images)} predictions, found {stored.count()}", file=sys.stderr)
            return 1
        stored_boxes = sum(len(p.boxes) for p in stored)
        n = len(images)
        bare_rate, plat_rate = n / min(bare_s), n / min(plat_s)
        print(f"bare forward: {bare_rate:.2f} images/s best, {n / statistics.median(bare_s):.2f} "
              f"median of {args.repeats} ({boxes / n:.1f} boxes/image)")
        print(f"platform (prelabel_run_execute): {plat_rate:.2f} images/s best, "
              f"{n / statistics.median(plat_s):.2f} median ({stored_boxes / n:.1f} boxes/image "
              f"stored, {stored.count()} Prediction rows after {args.repeats + 1} runs)")

        parts, prepare = _breakdown(project, images, version_dir, args.batch, args.device)
        total = sum(parts.values())
        print(f"platform path, step by step (one run, {total:.2f} s; bare forward best "
              f"{min(bare_s):.2f} s):")
        for name, seconds in parts.items():
            print(f"  {name:<46} {seconds:6.3f} s  {seconds / total:5.1%}")
        print(f"  {'(within predict: to_model_image + resize)':<46} {prepare:6.3f} s")
        print(f"model load ({min(load_s):.3f} s best) happens once per worker process: the "
              "platform keeps the loaded version, so the timed runs above do not pay it")

        served, bare1, regions = _predict_latency(images, model, detector, args.requests,
                                                  args.device, threshold=0.0,
                                                  warmup=1 if big else 3)
        s50, s99 = _percentiles(served)
        b50, b99 = _percentiles(bare1)
        print(f"/predict, one task, {args.requests} requests over loopback "
              f"({regions:.1f} regions/answer): p50 {s50:.1f} ms, p99 {s99:.1f} ms")
        print(f"bare single-image forward: p50 {b50:.1f} ms, p99 {b99:.1f} ms "
              f"(/predict adds {s50 - b50:.1f} ms at p50, {s50 / b50:.2f}x)")

        overhead = 1.0 - plat_rate / bare_rate
        verdict = "met" if overhead <= OVERHEAD_TARGET else "MISSED"
        print(f"target: overhead <= {OVERHEAD_TARGET:.0%}: {verdict}")
        print(f"prelabel overhead vs bare forward: {overhead:.1%} (platform {plat_rate:.2f} "
              f"img/s, bare {bare_rate:.2f} img/s, batch {args.batch}, {args.preset}, "
              f"{device_name}, {_threads()})")
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
