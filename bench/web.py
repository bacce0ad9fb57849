"""How the web app's read models scale: a VinDr-sized project, timed per page.

    python -m bench.web [--images 15000] [--readers 17] [--repeats 5]

What runs: a throw-away PostgreSQL database (created, migrated, dropped) seeded
with rows only (no image files): ``--images`` images, each read by 3 of
``--readers`` readers (VinDr-CXR: 3 of 17), about a third with 1-3 boxes per
read and the rest "No finding", one finished consensus run that recorded every
read, one consensus box per positive image, and a promoted model version with a
stored prediction (uncertainty scores and 3 boxes with 15-class probability
vectors) on every image; then ``ANALYZE``, as autovacuum would do on a live
database.

Timed (median of ``--repeats``, after one warm-up call), through the same
services the pages' API calls use:

* ``states``: every image's state (unassigned ... final) — the core of the rest;
* ``dashboard``: the dashboard's whole read model;
* ``browse``: the first grid page (60 images), and filtered to one class;
* ``layers``: one image in the viewer (an admin, every layer, reader pairs);
* ``my agreement``: one reader's agreement with the final labels (~2,600 images).

Baseline (the ratio printed last): in the same run, one bare scan of the
columns the grid needs for every image of the project
(``values_list`` of id, pseudo id, size, gold flag), the least any page that
looks at the whole project must read. The ratio says how many such scans a
page costs. No target is set by the issue; the numbers say whether the pages
stay interactive at this size.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench._server import temporary_database

SERVER = os.environ.get("CXR_BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432/postgres")


def _setup(db_url: str, data_dir: Path) -> None:
    os.environ.update({
        "DJANGO_SETTINGS_MODULE": "cxr_platform.settings", "DATABASE_URL": db_url,
        "CXR_DATA_DIR": str(data_dir), "CXR_SECRET_KEY": secrets.token_urlsafe(48),
        "CXR_PSEUDONYM_KEY": secrets.token_urlsafe(48), "CXR_DEBUG": "false",
        "CXR_LOG_LEVEL": "WARNING"})
    os.environ.pop("CELERY_BROKER_URL", None)
    import django

    django.setup()


def _seed(n_images: int, n_readers: int, seed: int):
    """Rows of a project as the platform would hold them after reading + consensus."""
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from annotations import models as m
    from annotations.services.projects import project_create

    rng = random.Random(seed)
    project = project_create(name="Bench", slug="bench", taxonomy_preset="vindr_cxr")
    classes = list(project.label_classes.filter(image_level=False).order_by("class_id"))
    User = get_user_model()
    readers = []
    for i in range(n_readers):
        user = User.objects.create(username=f"r{i}@example.org", email=f"r{i}@example.org")
        readers.append(m.Reader.objects.create(user=user, code=f"R{i + 1}"))
    studies = m.Study.objects.bulk_create(
        m.Study(project=project, pseudo_id=f"STU-{i:06d}", patient_pseudo_id=f"PAT-{i:06d}")
        for i in range(n_images))
    images = m.Image.objects.bulk_create(
        m.Image(project=project, study=s, pseudo_id=f"IMG-{i:06d}", pixel_hash=f"{i:064d}",
                width=2048, height=2500, display_path=f"x/{i}.png", display_width=839,
                display_height=1024, thumbnail_path=f"x/{i}t.png", is_gold=i % 50 == 0)
        for i, s in enumerate(studies))
    chosen = {img.pk: rng.sample(readers, 3) for img in images}
    now = timezone.now()
    assignments = m.Assignment.objects.bulk_create(
        m.Assignment(image=img, reader=r, status="completed", completed_at=now)
        for img in images for r in chosen[img.pk])
    by_pair = {(a.image_id, a.reader_id): a for a in assignments}
    positive = {img.pk: rng.random() < 0.33 for img in images}
    anns = m.ReaderAnnotation.objects.bulk_create(
        m.ReaderAnnotation(image=img, reader=r, assignment=by_pair[(img.pk, r.pk)],
                           source="import", image_labels=[] if positive[img.pk]
                           else ["No finding"])
        for img in images for r in chosen[img.pk])
    boxes, finding = [], {}
    for ann in anns:
        if not positive[ann.image_id]:
            continue
        cls = finding.setdefault(ann.image_id, rng.choice(classes))
        for _ in range(rng.randint(1, 3)):
            x, y = rng.uniform(200, 1500), rng.uniform(200, 1800)
            boxes.append(m.AnnotationBox(annotation=ann, label_class=cls, x_min=x, y_min=y,
                                         x_max=x + 300, y_max=y + 250))
    m.AnnotationBox.objects.bulk_create(boxes, batch_size=5000)
    run = m.ConsensusRun.objects.create(project=project, strategy="wbf", status="done",
                                        finished_at=now, digest="bench")
    through = m.ConsensusRun.annotations.through
    through.objects.bulk_create((through(consensusrun_id=run.pk, readerannotation_id=a.pk)
                                 for a in anns), batch_size=10000)
    rows = m.ConsensusImage.objects.bulk_create(
        m.ConsensusImage(run=run, image=img, n_readers=3, agreement=rng.random(),
                         image_labels=[] if positive[img.pk] else ["No finding"])
        for img in images)
    m.ConsensusBox.objects.bulk_create(
        (m.ConsensusBox(consensus_image=row, label_class=finding[row.image_id], x_min=500,
                        y_min=600, x_max=800, y_max=850, score=0.9, support=["R1", "R2"])
         for row in rows if row.image_id in finding), batch_size=5000)
    version = m.ModelVersion.objects.create(project=project, name="bench-v1", sha256="0",
                                            config="", promoted=True, metrics={"map_40": 0.3})
    probs = [round(1 / 15, 4)] * 15
    m.Prediction.objects.bulk_create(
        (m.Prediction(image=img, model_version=version.name, score=0.5, uncertainty={
            "entropy_max": rng.random(), "least_confidence_max": rng.random()},
            boxes=[{"label": "Nodule/Mass", "box": [1, 2, 3, 4], "score": 0.5, "probs": probs}] * 3)
         for img in images), batch_size=5000)
    return project, readers, images, classes


def _time(fn, repeats: int) -> float:
    fn()  # warm-up: connection, caches
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=15000)
    p.add_argument("--readers", type=int, default=17)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, \
            temporary_database(SERVER, "cxr_bench_web") as db_url:
        _setup(db_url, Path(tmp))
        from django.contrib.auth import get_user_model
        from django.core.management import call_command
        from django.db import connections

        try:
            call_command("migrate", verbosity=0)
            t0 = time.perf_counter()
            project, readers, images, classes = _seed(args.images, args.readers, args.seed)
            with connections["default"].cursor() as cursor:
                cursor.execute("ANALYZE")  # planner statistics as autovacuum would keep them
            print(f"seeded {args.images} images, {3 * args.images} reads, {args.readers} "
                  f"readers in {time.perf_counter() - t0:.1f} s")
            return _measure(project, readers, images, classes, args.repeats,
                            get_user_model())
        finally:
            connections.close_all()


def _measure(project, readers, images, classes, repeats: int, User) -> int:
    from annotations.models import Image
    from annotations.services import image_layers, my_reading, overview

    admin = User.objects.create(username="admin@example.org", is_staff=True)
    finding = classes[0].name
    probe = images[len(images) // 2]
    cases = [
        ("baseline: scan grid columns", lambda: list(Image.objects.filter(
            project=project).values_list("pk", "pseudo_id", "width", "height", "is_gold"))),
        ("states (all images)", lambda: overview.image_states(project)),
        ("dashboard", lambda: overview.project_overview(project)),
        ("browse, first page", lambda: overview.image_browse(project, limit=60)),
        (f"browse, class {finding}", lambda: overview.image_browse(project, label=finding)),
        ("layers, one image", lambda: image_layers.image_layers(user=admin,
                                                               image_id=probe.pseudo_id)),
        ("my agreement, one reader", lambda: my_reading.my_agreement(readers[0], project)),
    ]
    results = [(name, _time(fn, repeats)) for name, fn in cases]
    base = results[0][1]
    print(f"{'read model':32s} {'median ms':>10s} {'x baseline':>11s}")
    for name, seconds in results:
        print(f"{name:32s} {seconds * 1000:10.1f} {seconds / base:11.1f}")
    worst = max(results[1:], key=lambda r: r[1])
    print(f"slowest page read model: {worst[0]} {worst[1] * 1000:.0f} ms; ratio vs baseline "
          f"scan {worst[1] / base:.1f} ({len(images)} images, {os.cpu_count()} cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
