"""A VinDr-CXR-sized project end to end: Label Studio workspaces, reconcile, consensus,
the pages' read models and the COCO export, each figure next to a baseline.

    python -m bench.scale [--images 18000] [--readers 17] [--reads 3] [--seeded 100000]

What runs: a throw-away PostgreSQL database (created, migrated, dropped) and a real
Label Studio (the cached template, SQLite, its own data folder) on a free loopback port.
The project gets ``--images`` image rows (VinDr-CXR's size; no pixels: nothing here
reads them), ``--readers`` readers and ``--reads`` reads per image (VinDr-CXR: 3 of 17),
so each reader's workspace holds about images x reads / readers tasks.  Webhooks go to a
closed port, as when the platform was down: every read reaches the platform through
reconcile only.

Measured, each with its baseline from the same run (the ratio says what the platform
adds on top of the least the same work could cost):

* push: ``assignments_push`` (every workspace made through the bridge, every task
  imported) vs a bare Label Studio import of as many tasks into one project;
* reads: one annotation per task by the workspace's reader (setup, no baseline).  All but
  ``--api-reads`` of them are made inside Label Studio by its own models
  (``bench/ls_reads.py``: the same model code and signals as a save, without HTTP); the
  last ``--api-reads`` (spread over the workspaces, made when they are full) go through
  the labeling screen's API as the reader's browser sends them, and what one such save
  costs Label Studio at that size is printed for reference;
* reconcile, full: every workspace exported and every read stored (time, rise of
  resident memory) vs the bare exports of every workspace (the worst case: the platform missed
  every webhook of the whole reading); then the same full pass again with everything
  stored (the daily full pass);
* reconcile, incremental after 1% of the reads changed: vs the full pass (target: a
  pass costs what changed, not the project);
* consensus over the whole project (WBF, one run) vs the strategy alone on the same
  reads in memory;
* read models (dashboard, browse, viewer layers, My reading) at ``--images`` and, seeded
  without Label Studio (``bench.web``'s seed), at ``--seeded`` images, each vs a bare
  scan of the grid's columns (targets: under 1 s at 18,000, under 2 s at 100,000);
* COCO export of the final labels, streamed as the API serves it, at ``--images`` and
  at ``--seeded``: time and peak Python memory vs the same document built whole in
  memory (target: streamed, peak under the size of the document).

The export's peak memory is ``tracemalloc``'s (Python allocations: what the platform's
code holds); the reconcile passes report the rise of resident memory instead, sampled,
because tracemalloc slows every allocation and their time is the figure that matters.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench._server import free_port, temporary_database

SERVER = os.environ.get("CXR_BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432/postgres")
ROWS: list[tuple[str, float, str, float, str, str]] = []


def row(figure: str, seconds: float, baseline_name: str, baseline: float, target: str = "",
        verdict: str = "") -> None:
    ROWS.append((figure, seconds, baseline_name, baseline, target, verdict))
    ratio = seconds / baseline if baseline else float("nan")
    print(f"  {figure:44s} {seconds:9.2f} s | {baseline_name:34s} {baseline:8.2f} s | "
          f"x{ratio:7.1f} {target} {verdict}", flush=True)


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _peak(fn: Callable[[], Any]) -> tuple[float, int, Any]:
    tracemalloc.start()
    try:
        seconds, out = _timed(fn)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return seconds, peak, out


def _rss() -> int:
    """This process's resident memory now, in bytes (Linux: /proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _rss_peak(fn: Callable[[], Any]) -> tuple[float, int, Any]:
    """Seconds, the highest rise of resident memory over its level at the start (sampled
    every 20 ms by a thread) and ``fn``'s result.  For the reconcile passes: tracemalloc
    slows every allocation (a pass took half as long again under it), so their time
    would not be the platform's."""
    import threading

    start, peak, done = _rss(), [0], threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], _rss() - start)
    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    try:
        seconds, out = _timed(fn)
    finally:
        done.set()
        watcher.join()
    return seconds, max(peak[0], _rss() - start), out


def _median(fn: Callable[[], Any], repeats: int) -> float:
    fn()
    samples = []
    for _ in range(repeats):
        seconds, _ = _timed(fn)
        samples.append(seconds)
    return statistics.median(samples)


def _setup(db_url: str, data: Path, ls: Any, token: str, bridge: str) -> None:
    os.environ.update({
        "DJANGO_SETTINGS_MODULE": "cxr_platform.settings", "DATABASE_URL": db_url,
        "CXR_DATA_DIR": str(data), "CXR_SECRET_KEY": secrets.token_urlsafe(48),
        "CXR_PSEUDONYM_KEY": secrets.token_urlsafe(48), "CXR_DEBUG": "false",
        "CXR_LOG_LEVEL": "WARNING", "CXR_LABEL_STUDIO_URL": ls.url,
        "CXR_LABEL_STUDIO_PUBLIC_URL": ls.url, "CXR_LABEL_STUDIO_TOKEN": token,
        "CXR_LABEL_STUDIO_BRIDGE_SECRET": bridge,
        # nobody listens there: every webhook is lost, reconcile must find every read
        "CXR_PLATFORM_URL_FOR_LABEL_STUDIO": f"http://127.0.0.1:{free_port()}",
        "CXR_PUBLIC_BASE_URL": "http://127.0.0.1:8000"})
    os.environ.pop("CELERY_BROKER_URL", None)
    import django

    django.setup()


def _project(n_images: int, n_readers: int, reads: int):
    from annotations import models as m
    from annotations.services import readers
    from annotations.services.projects import project_create

    project = project_create(name="Scale", slug="scale", taxonomy_preset="vindr_cxr")
    project.readers_per_image = reads
    project.save()
    rs = [readers.reader_create(email=f"s{i}@example.org", code=f"R{i + 1}")
          for i in range(n_readers)]
    studies = m.Study.objects.bulk_create(
        m.Study(project=project, pseudo_id=f"STU-{i:06d}", patient_pseudo_id=f"PAT-{i:06d}")
        for i in range(n_images))
    m.Image.objects.bulk_create(
        (m.Image(project=project, study=s, pseudo_id=f"IMG-{i:06d}", pixel_hash=f"{i:064d}",
                 width=2048, height=2500, display_path=f"x/{i}.png", display_width=839,
                 display_height=1024, thumbnail_path=f"x/{i}t.png", is_gold=i % 50 == 0)
         for i, s in enumerate(studies)), batch_size=5000)
    readers.assignments_create(project=project)
    return project, rs


class _Reader:
    """A reader at the labeling screen: signed in through the platform's one-time link
    (the only way in), then the session's JSON calls, as the browser makes them."""

    def __init__(self, ws) -> None:
        import requests
        from django.conf import settings

        from annotations.services import label_studio_sync as sync

        self.url = settings.LABEL_STUDIO_URL
        self.session = requests.Session()
        link = sync.workspace_sign_in_url(workspace=ws, reader=ws.reader)
        answer = self.session.get(link, allow_redirects=False, timeout=30)
        if answer.status_code != 302:
            raise RuntimeError(f"sign-in of {ws.reader.code} failed: {answer.status_code}")

    def call(self, method: str, path: str, body: Any) -> dict:
        answer = self.session.request(method, self.url + path, json=body, timeout=60)
        answer.raise_for_status()
        return answer.json() if answer.content else {}


def _annotate_all(project, rng: random.Random, ls: Any, api_reads: int,
                  threads: int) -> tuple[int, int, float]:
    """One read per task by the workspace's reader: the first ones made in bulk by Label
    Studio's own models, the last ``api_reads`` through the labeling screen's API.
    Returns (reads made, of which through the API, seconds those took)."""
    import json
    import subprocess

    from annotations.label_studio.config import CHOICES_CONTROL, IMAGE_NAME
    from annotations.label_studio.regions import build_result
    from annotations.models import Workspace

    classes = [c.name for c in project.label_classes.filter(image_level=False)]
    jobs = []
    for ws in Workspace.objects.filter(project=project, kind="reading").select_related(
            "reader"):
        for task in ws.tasks.order_by("pk"):
            if rng.random() < 0.33:
                x, y = rng.uniform(200, 1500), rng.uniform(200, 1800)
                result = build_result([[x, y, x + 300, y + 250]], [rng.choice(classes)],
                                      original_width=2048, original_height=2500)
            else:  # a "No finding" read: the image-level choice, no regions
                result = [{"from_name": CHOICES_CONTROL, "to_name": IMAGE_NAME,
                           "type": "choices", "value": {"choices": ["No finding"]}}]
            jobs.append((ws, task.ls_task_id, result))
    rng.shuffle(jobs)
    split = max(0, len(jobs) - api_reads)
    bulk, screen = jobs[:split], jobs[split:]
    if bulk:
        lines = Path(ls.data_dir) / "bench-reads.jsonl"
        lines.write_text("".join(json.dumps({"task": t, "user": ws.ls_reader_user_id,
                                             "result": r}) + "\n" for ws, t, r in bulk))
        made = subprocess.run(  # noqa: S603 - fixed interpreter and script
            [str(ls.install.venv / "bin" / "python"),
             str(Path(__file__).with_name("ls_reads.py")), str(lines)],
            cwd=ls.data_dir, env=ls.environment(), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, check=False)
        # Label Studio's start-up chatter stays out of the table; its progress lines do not
        print("".join(line for line in made.stdout.splitlines(keepends=True)
                      if line.startswith("  (setup)")) if made.returncode == 0
              else made.stdout[-4000:], end="", flush=True)
        if made.returncode:
            raise RuntimeError(f"bench/ls_reads.py failed ({made.returncode})")
    sessions: dict[int, _Reader] = {}

    def make(job) -> dict:
        ws, task_id, result = job
        return sessions[ws.pk].call("POST", f"/api/tasks/{task_id}/annotations/",
                                    {"result": result})
    for ws, _, _ in screen:
        if ws.pk not in sessions:
            sessions[ws.pk] = _Reader(ws)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        made = sum(1 for _ in pool.map(make, screen))
    return len(bulk) + made, made, time.perf_counter() - t0


def _label_studio(tmp: Path):
    from annotations.label_studio.server import LabelStudioServer

    token, bridge = secrets.token_hex(20), secrets.token_urlsafe(32)
    ls = LabelStudioServer(tmp / "label-studio", free_port(), username="admin@example.org",
                           password=secrets.token_urlsafe(12), token=token,
                           bridge_secret=bridge)
    ls.start()
    return ls, token, bridge


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=18000)
    p.add_argument("--readers", type=int, default=17)
    p.add_argument("--reads", type=int, default=3)
    p.add_argument("--seeded", type=int, default=100000,
                   help="images of the seeded read-model figure (0: skip)")
    p.add_argument("--api-reads", type=int, default=340,
                   help="reads made through the labeling screen's API (the rest in bulk by "
                        "Label Studio's models; a number >= every read: all through the API)")
    p.add_argument("--threads", type=int, default=1,
                   help="API senders (setup; Label Studio on SQLite takes one writer)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        ls, token, bridge = _label_studio(tmp)
        try:
            with temporary_database(SERVER, "cxr_bench_scale") as db_url:
                _setup(db_url, tmp / "data", ls, token, bridge)
                from django.core.management import call_command
                from django.db import connections

                try:
                    call_command("migrate", verbosity=0)
                    _label_studio_phase(args, rng, ls)
                finally:
                    connections.close_all()
        finally:
            ls.stop()
    if args.seeded:
        _seeded_phase(args)
    print("\nfigure | seconds | baseline | baseline s | ratio | target | verdict")
    for figure, seconds, base_name, base, target, verdict in ROWS:
        ratio = seconds / base if base else float("nan")
        print(f"{figure} | {seconds:.2f} | {base_name} | {base:.2f} | {ratio:.1f} | {target} | "
              f"{verdict}")
    return 0


def _label_studio_phase(args, rng: random.Random, ls: Any) -> None:
    from django.db import connection

    from annotations.label_studio.client import LabelStudioClient
    from annotations.models import ReaderAnnotation, Workspace
    from annotations.services import label_studio_sync as sync

    t0 = time.perf_counter()
    project, readers = _project(args.images, args.readers, args.reads)
    print(f"{args.images} images, {args.readers} readers, {args.reads} reads each: rows in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    push, pushed = _timed(lambda: sync.assignments_push(project))
    per_ws = max(1, pushed // args.readers)
    # baseline: the same number of tasks imported into one plain Label Studio project, in
    # workspace-sized requests (what Label Studio alone costs for them)
    from django.conf import settings

    client = LabelStudioClient(settings.LABEL_STUDIO_URL, settings.LABEL_STUDIO_TOKEN)
    scratch = client.create_project("bench scratch", "<View><Image name='image' value='$image'/>"
                                    "</View>")
    tasks = [{"image": f"http://127.0.0.1:8000/x/{i}.png", "image_id": f"IMG-{i:06d}"}
             for i in range(pushed)]

    def bare_import() -> None:
        for start in range(0, len(tasks), per_ws):
            client.import_tasks(scratch, tasks[start:start + per_ws])
    bare_push, _ = _timed(bare_import)
    row(f"push {pushed} tasks, {args.readers} workspaces", push, "bare Label Studio import",
        bare_push)

    made_s, (made, screen, screen_s) = _timed(
        lambda: _annotate_all(project, rng, ls, args.api_reads, args.threads))
    print(f"  (setup) {made} reads made in Label Studio in {made_s:.0f} s; {screen} of them "
          f"through the labeling screen's API at {per_ws} tasks a workspace: "
          f"{1000 * screen_s / max(screen, 1):.0f} ms a save", flush=True)

    workspaces = list(Workspace.objects.filter(project=project))
    bare_export, _ = _timed(lambda: [sync.ws_client(w).export_project_annotations(
        w.ls_project_id) for w in workspaces])
    full_s, full_peak, counts = _rss_peak(lambda: sync.reconcile_all(full=True))
    stored = ReaderAnnotation.objects.filter(image__project=project, is_current=True).count()
    row(f"reconcile full ({counts['created']} new reads)", full_s, "bare exports, every ws",
        bare_export, verdict=f"stored {stored}/{made}; RSS rise {full_peak / 2**20:.0f} MiB")

    # the daily full pass over a project whose reads are all stored already
    again_s, again_peak, again = _rss_peak(lambda: sync.reconcile_all(full=True))
    row(f"reconcile full again ({again['unchanged']} unchanged)", again_s,
        "bare exports, every ws", bare_export, verdict=f"RSS rise {again_peak / 2**20:.0f} MiB")

    # 1% of the reads change (missed webhooks again), then the periodic pass.  Passes
    # are CXR_RECONCILE_EVERY (600 s) apart in production, so their 2-minute overlap
    # re-reads only the last 2 minutes of changes; here the changes follow the full pass
    # within seconds, so the overlap is set to none (else it would re-read them all).
    sync.RECONCILE_OVERLAP = dt.timedelta(0)
    changed = rng.sample(list(ReaderAnnotation.objects.filter(
        image__project=project, is_current=True).select_related("image")), max(1, made // 100))
    from annotations.label_studio.regions import build_result
    from annotations.models import WorkspaceTask

    sessions: dict[int, _Reader] = {}
    for ann in changed:
        wt = WorkspaceTask.objects.select_related("workspace__reader").get(
            image=ann.image, workspace__reader=ann.reader, workspace__kind="reading")
        reader = sessions.setdefault(wt.workspace_id, _Reader(wt.workspace))
        reader.call("PATCH", f"/api/annotations/{int(ann.external_id)}/", {"result": build_result(
            [[100, 100, 400, 400]], ["Nodule/Mass"], original_width=2048,
            original_height=2500)})
    time.sleep(1.0)
    inc_s, inc_peak, inc = _rss_peak(lambda: sync.reconcile_all(full=False))
    row(f"reconcile incremental ({len(changed)} changed)", inc_s, "reconcile full", full_s,
        "target: << full", "PASS" if inc_s < full_s / 5 else "FAIL")
    print(f"    incremental scanned {inc['scanned']} tasks, stored {inc['created']}; RSS "
          f"rise {inc_peak / 2**20:.0f} MiB", flush=True)

    from annotations import consensus as engine
    from annotations.services.consensus import (
        consensus_run_create,
        consensus_run_execute,
        reads_from_annotations,
        usable_annotations,
    )

    def pure() -> None:
        reads = reads_from_annotations(list(usable_annotations(project)))
        engine.build("wbf", {}).run(reads)
    pure_s, _ = _timed(pure)
    run = consensus_run_create(project=project, strategy="wbf", enqueue=False)
    cons_s, run = _timed(lambda: consensus_run_execute(run_id=run.pk))
    row(f"consensus, whole project ({run.stats.get('images')} images)", cons_s,
        "load + strategy alone", pure_s, verdict=run.status)

    # as autovacuum would have by now on a live database (this machine's PostgreSQL
    # runs with autovacuum off: without statistics the planner nests loops)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    _read_models(project, readers, args.images, args.repeats, "1 s")

    connection.queries_log.clear()
    _export(project, f"{args.images} images")


def _export(project, label: str) -> None:
    """The COCO export of the final labels as the API serves it (streamed, chunk by
    chunk) against the same document built whole in memory."""
    from annotations.services.exports import annotations_export, annotations_export_stream

    whole_s, whole_peak, whole = _peak(lambda: annotations_export(
        project=project, fmt="coco", source="final"))
    size = len(whole.content)
    del whole

    def streamed() -> int:
        return sum(len(b) for b in annotations_export_stream(project=project, fmt="coco").chunks)
    seconds, peak, written = _peak(streamed)  # one entry per line: fewer bytes than indent=1
    row(f"COCO export streamed @ {label} ({written / 2**20:.1f} MiB)", seconds, "built whole",
        whole_s, "target: streamed", f"peak {peak / 2**20:.1f} MiB = {peak / written:.2f} x "
        f"the document (built whole: {whole_peak / size:.1f} x): "
        f"{'PASS' if peak < written else 'FAIL'}")


def _read_models(project, readers, n_images: int, repeats: int, target: str) -> None:
    from django.contrib.auth import get_user_model

    from annotations.models import Image
    from annotations.services import image_layers, my_reading, overview

    admin, _ = get_user_model().objects.get_or_create(username="admin@example.org",
                                                      defaults={"is_staff": True})
    probe = Image.objects.filter(project=project).order_by("id")[n_images // 2]
    reader = readers[0]
    base = _median(lambda: list(Image.objects.filter(project=project).values_list(
        "pk", "pseudo_id", "width", "height", "is_gold")), repeats)
    limit = float(target.split()[0])
    for name, fn in (
            ("dashboard", lambda: overview.project_overview(project)),
            ("browse, first page", lambda: overview.image_browse(project, limit=60)),
            ("viewer layers, one image", lambda: image_layers.image_layers(
                user=admin, image_id=probe.pseudo_id)),
            ("My reading", lambda: (my_reading.my_progress(reader), my_reading.my_queue(reader),
                                    my_reading.my_agreement(reader, project)))):
        seconds = _median(fn, repeats)
        row(f"{name} @ {n_images} images", seconds, "bare scan of grid columns", base,
            f"target: < {target}", "PASS" if seconds < limit else "FAIL")


def _seeded_phase(args) -> None:
    """The read models at ``--seeded`` images, rows seeded without Label Studio."""
    import subprocess

    code = ("import sys; from bench import scale; sys.exit(scale._seeded_child("
            f"{args.seeded}, {args.readers}, {args.repeats}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=False, cwd=Path(__file__).resolve().parents[1])
    print(out.stdout, end="")
    if out.returncode:
        print(out.stderr[-3000:])
    for line in out.stdout.splitlines():
        if line.startswith("ROW|"):
            _, figure, seconds, base_name, base, target, verdict = line.split("|")
            ROWS.append((figure, float(seconds), base_name, float(base), target, verdict))


def _seeded_child(n_images: int, n_readers: int, repeats: int) -> int:
    """In a process of its own (its own Django settings and database)."""
    from bench import web

    with tempfile.TemporaryDirectory() as tmp, \
            temporary_database(SERVER, "cxr_bench_scale_seeded") as db_url:
        web._setup(db_url, Path(tmp))
        from django.core.management import call_command
        from django.db import connections

        try:
            call_command("migrate", verbosity=0)
            project, readers, images, _ = web._seed(n_images, n_readers, 0)
            with connections["default"].cursor() as cursor:
                cursor.execute("ANALYZE")
            _read_models(project, readers, n_images, repeats, "2 s")
            _export(project, f"{n_images} images")
            for r in ROWS:
                print("ROW|" + "|".join(str(v) for v in r))
        finally:
            connections.close_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
