"""Loopback load of Label Studio annotation webhooks against the platform.

    python -m bench.webhooks [--events 3000] [--senders 8] [--replays 0.05]

What runs: a throw-away PostgreSQL database (created, migrated, dropped), the
platform under gunicorn (gthread workers, keep-alive) on a free 127.0.0.1 port,
a real Celery worker on the ``default`` queue with Redis as broker (db 14,
flushed before and after), and a stub Label Studio (below).  The seed is a
project with three readers, each with a reading workspace as the bridge would
have made it (made-up organization, reader-user and service-user ids, a random
service token per workspace), and ``--images`` small PNGs ingested through the
real pipeline; every (image, reader) pair is a workspace task with a made-up
Label Studio task id.  Label Studio itself is not needed: the bench sends what
it would send, each event to its workspace's own URL
(``/api/label-studio/webhook/<workspace id>/``) with that workspace's own
secret (``label_studio_sync.webhook_secret``), every annotation by the
workspace's reader user.

Stub Label Studio: the platform trusts no payload; processing an annotation
event re-reads the annotation (``GET /api/annotations/<id>/`` with the
workspace's service token) and stores what Label Studio holds.  The stub
stands in for Label Studio's annotation API: an ``http.server``
ThreadingHTTPServer on a free 127.0.0.1 port, started by the bench in its own
process (so that it does not share the senders' interpreter lock), whose URL
the platform and the worker get as ``CXR_LABEL_STUDIO_URL``.  It answers with
the version Label Studio would hold at that moment: the newest one whose
webhook the senders have started to send (Label Studio saves an annotation,
then sends its webhook); once everything is sent, that is the newest version
the plan holds for each annotation, i.e. what the platform should end up
holding.  A token that is not the service token of the annotation's workspace
gets 403, an id it does not hold 404.  ``--ls-holds final`` (a diagnosis)
answers with the newest version from the start, so that every older event goes
stale.  Its lookup cost (a new HTTP connection per event, the stub's answer) is
part of the measured processing, as Label Studio's would be; a real Label
Studio answers slower (a Django view over its database), so the processing
rate here is an upper bound.

Load: ``--events`` distinct webhooks built from the recorded Label Studio
payload (``/work/shared/label-studio-samples/webhook_payload.json``, with the
project's real labeling config in it): one ANNOTATION_CREATED per task, then
ANNOTATION_UPDATED events with a later ``updated_at`` and different boxes
(``--quick-edits`` of them right behind the same annotation's previous event,
as when a reader fixes a box at once), and ``--replays`` of them sent again
byte for byte (Label Studio retries), mixed in later.  ``--senders`` threads
each keep one HTTP connection alive and send back to back (closed loop), like
Label Studio's request threads.  The ack phase is bounded by ``--max-seconds``;
nothing leaves the loopback interface.  A probe event processed by the worker
before the load proves the worker is up.

Forged-event check, before the load: 20 events with a valid workspace secret,
exactly what Label Studio holds except ``completed_by`` (and ``updated_by``)
rewritten to another workspace's reader user, must all end ``rejected`` and
create no reader annotation and no protocol violation; the bench stops
otherwise.

Measured: acknowledgement latency of each POST (client side, send to full
response; p50/p99), sustained events/s over the ack phase, then the worker's
processing: the bench polls the event table until nothing is ``pending`` (at
most ``--drain-timeout``) and reports events/s from the first to the last
processed event (rejected ones included: they are re-read too).  Outcomes are
counted as processed / rejected as stale / other rejected / ignored.  Stale is
correct behaviour: the event carries an older version than Label Studio holds
when the worker re-reads it (the reader saved again before the worker got to
it: a quick edit's earlier event, or any update whose next one was sent while
it waited in the backlog), so it changes nothing.  Lost = distinct events sent
minus events stored, plus events still pending at the end (a worker task that
raised leaves its event pending; those errors are counted from the worker's
log).  Every task's current reader annotation is also checked to be the newest
version sent for it (the effect of the events, not only their rows).

Baseline (the ratio printed last): the same senders, against the same gunicorn
and database, sending as many ``GET /health/`` requests, in the same run just
before the webhooks.  ``/health/`` goes through the same WSGI stack and
middleware but touches no database, so ack rate / health rate is the share of
the server's bare request capacity that the webhook receiver keeps after its
secret check, JSON parse, INSERT + commit and the broker publish.  During the
webhook phase the Celery worker (and the stub it calls) is processing on the
same cores; that competition is part of the real cost and is included.

Targets (from the issue): >= 300 acknowledged events/s, p99 < 100 ms, 0 lost.
"Met" also needs the effects check to hold, no rejection other than stale and
every replay acknowledged as a duplicate.
"""

from __future__ import annotations

import argparse
import copy
import http.client
import json
import multiprocessing
import os
import random
import re
import secrets
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench._server import Processes, free_port, temporary_database, wait_http

SAMPLE = Path("/work/shared/label-studio-samples/webhook_payload.json")
PG_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
DB_NAME = "cxr_bench_webhooks"
BROKER = "redis://127.0.0.1:6379/14"
WEBHOOK_PATH = "/api/label-studio/webhook/"  # + "<workspace id>/"
SECRET_HEADER = "X-CXR-Webhook-Secret"  # settings.LABEL_STUDIO_WEBHOOK_HEADER
TARGET_RATE, TARGET_P99_MS = 300.0, 100.0
LS_USER0, LS_PROJECT0, LS_TASK0, LS_ANN0 = 9000, 500, 100_000, 700_000
LS_ORG0, LS_SERVICE_USER0 = 300, 9100  # made-up organization and service-user ids
FORGED = 20  # events of the forged-event check
BASE_TIME = 1_790_000_000.0  # epoch seconds of the first annotation's updated_at
PROBE_ACTION = "BENCH_PROBE"  # an action the platform ignores: proves the worker is up


# --- configuration ------------------------------------------------------------------


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=3000, help="distinct webhooks to send")
    p.add_argument("--senders", type=int, default=8, help="concurrent sender threads")
    p.add_argument("--replays", type=float, default=0.05,
                   help="extra byte-identical replays, as a fraction of --events")
    p.add_argument("--quick-edits", type=float, default=0.05,
                   help="fraction of updates sent right after the task's previous event "
                        "(a reader fixing a box at once)")
    p.add_argument("--images", type=int, default=0,
                   help="images to seed (3 tasks each); default events/5")
    p.add_argument("--web-workers", type=int, default=2, help="gunicorn worker processes")
    p.add_argument("--web-threads", type=int, default=4, help="gthread threads per worker")
    p.add_argument("--celery-concurrency", type=int, default=2)
    p.add_argument("--max-seconds", type=float, default=60.0, help="bound on each load phase")
    p.add_argument("--drain-timeout", type=float, default=180.0,
                   help="longest wait for the worker to process everything")
    p.add_argument("--worker-after-acks", action="store_true",
                   help="diagnosis: start the Celery worker only after the ack phase")
    p.add_argument("--ls-holds", choices=("sent", "final"), default="sent",
                   help="what the stub Label Studio answers: the newest version sent so far "
                        "(default), or (diagnosis) the final version from the start")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    args = p.parse_args(argv)
    args.images = args.images or max(1, args.events // 5)
    return args


def _platform_env(data_dir: Path, db_url: str, ls_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "DJANGO_SETTINGS_MODULE": "cxr_platform.settings",
        "DATABASE_URL": db_url,
        "CELERY_BROKER_URL": BROKER,
        "CXR_DATA_DIR": str(data_dir),
        "CXR_SECRET_KEY": secrets.token_urlsafe(48),
        "CXR_PSEUDONYM_KEY": secrets.token_urlsafe(48),
        "CXR_LABEL_STUDIO_WEBHOOK_SECRET": secrets.token_urlsafe(32),
        "CXR_LABEL_STUDIO_URL": ls_url,  # the stub: annotation lookups only
        "CXR_LABEL_STUDIO_TIMEOUT": "10",
        "CXR_DEBUG": "false",  # DEBUG keeps every SQL query in memory
        "CXR_LOG_LEVEL": "WARNING",
    })
    return env


# --- seed -----------------------------------------------------------------------------


@dataclass(frozen=True)
class WsSpec:
    """One reading workspace as the senders and the stub Label Studio see it."""

    pk: int
    ls_reader_user_id: int
    service_token: str
    secret: str

    @property
    def path(self) -> str:
        return f"{WEBHOOK_PATH}{self.pk}/"

    @property
    def headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json", SECRET_HEADER: self.secret}


@dataclass(frozen=True)
class TaskSpec:
    """One workspace task as Label Studio would know it."""

    ls_task_id: int
    ls_project_id: int
    ls_user_id: int  # the workspace's reader user: the annotations' completed_by
    ws: int  # index into the workspaces
    width: int
    height: int


def _write_pngs(folder: Path, n: int, side: int = 160) -> list[Path]:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    paths = []
    for i in range(n):
        path = folder / f"cxr{i:05d}.png"
        cv2.imwrite(str(path), (rng.random((side, side)) * 255).astype(np.uint8))
        paths.append(path)
    return paths


def _seed(work: Path, n_images: int
          ) -> tuple[list[TaskSpec], list[WsSpec], list[str], str]:
    """Project, images, readers, their workspaces (with made-up Label Studio
    organization and user ids and a random service token), tasks; returns tasks,
    workspaces (with their webhook secrets), box class names and the project's
    labeling config."""
    from annotations.label_studio.config import label_config
    from annotations.models import Image, LabelClass, Workspace, WorkspaceTask
    from annotations.services import ingest, readers
    from annotations.services.exports import project_taxonomy
    from annotations.services.label_studio_sync import webhook_secret
    from annotations.services.projects import project_create

    project = project_create(name="Bench webhooks", slug="bench-webhooks", readers_per_image=3)
    batch = ingest.ingest_batch_create(project=project,
                                       inputs=_write_pngs(work / "in", n_images))
    statuses = Counter(ingest.ingest_item_process(item_id=i).status
                       for i in batch.items.values_list("id", flat=True))
    if statuses.get("imported", 0) != n_images:
        raise RuntimeError(f"seed ingest failed: {dict(statuses)}")
    images = list(Image.objects.filter(project=project).order_by("id"))
    tasks: list[TaskSpec] = []
    workspaces: list[WsSpec] = []
    for r in range(3):
        reader = readers.reader_create(email=f"bench{r}@example.org", code=f"B{r}")
        ws = Workspace.objects.create(
            project=project, reader=reader, ls_project_id=LS_PROJECT0 + r,
            ls_organization_id=LS_ORG0 + r, ls_reader_user_id=LS_USER0 + r,
            ls_service_user_id=LS_SERVICE_USER0 + r, service_token=secrets.token_hex(20))
        workspaces.append(WsSpec(ws.pk, ws.ls_reader_user_id, ws.service_token,
                                 webhook_secret(ws)))
        base = LS_TASK0 + r * n_images
        WorkspaceTask.objects.bulk_create(
            WorkspaceTask(workspace=ws, image=img, ls_task_id=base + i)
            for i, img in enumerate(images))
        tasks += [TaskSpec(base + i, LS_PROJECT0 + r, ws.ls_reader_user_id, r, img.width,
                           img.height) for i, img in enumerate(images)]
    readers.assignments_create(project=project)
    classes = list(LabelClass.objects.filter(project=project, image_level=False)
                   .values_list("name", flat=True))
    return tasks, workspaces, classes, label_config(project_taxonomy(project))


# --- payloads -------------------------------------------------------------------------


@dataclass
class Plan:
    """What to send, in order, and what the platform should end up holding.

    Each task has one annotation, kept in a *slot* (the task's index in the seed):
    ``events[slot][v]`` is the webhook of its version ``v`` (0: created), and what
    the stub Label Studio answers is that webhook's ``annotation``.
    """

    bodies: list[bytes] = field(default_factory=list)
    is_replay: list[bool] = field(default_factory=list)
    #: per body: workspace index, annotation slot and version it carries
    ws: list[int] = field(default_factory=list)
    slot: list[int] = field(default_factory=list)
    version: list[int] = field(default_factory=list)
    #: ls_task_id -> (annotation id, updated_at ISO string) of the newest version sent
    newest: dict[int, tuple[int, str]] = field(default_factory=dict)
    #: per slot: annotation id, workspace index, and the webhook of each version
    ann_ids: list[int] = field(default_factory=list)
    ann_ws: list[int] = field(default_factory=list)
    events: list[list[dict[str, Any]]] = field(default_factory=list)

    @property
    def distinct(self) -> int:
        return len(self.bodies) - sum(self.is_replay)


def _iso(seconds: float) -> str:
    t = time.gmtime(seconds)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(seconds % 1 * 1e6):06d}Z"


def _template(config: str) -> dict[str, Any]:
    body = json.loads(SAMPLE.read_text())["body"]
    body["project"]["label_config"] = config
    return body


def _event(template: dict[str, Any], spec: TaskSpec, version: int, classes: list[str],
           rng: random.Random) -> tuple[dict[str, Any], int, str]:
    """The webhook for ``version`` (0: created) of the one annotation of ``spec``."""
    from annotations.label_studio.regions import build_result

    w, h = spec.width, spec.height
    x0, y0 = rng.uniform(0, w * 0.6), rng.uniform(0, h * 0.6)
    box = [x0, y0, x0 + rng.uniform(8, w * 0.35), y0 + rng.uniform(8, h * 0.35)]
    ann_id = LS_ANN0 + spec.ls_task_id
    created = _iso(BASE_TIME + spec.ls_task_id)
    updated = _iso(BASE_TIME + spec.ls_task_id + version * 37.25)
    body = copy.deepcopy(template)
    body["action"] = "ANNOTATION_UPDATED" if version else "ANNOTATION_CREATED"
    body["annotation"].update(
        id=ann_id, task=spec.ls_task_id, project=spec.ls_project_id,
        completed_by=spec.ls_user_id, updated_by=spec.ls_user_id,
        created_at=created, updated_at=updated, unique_id=f"{ann_id}-{version}",
        result=build_result([box], [rng.choice(classes)], original_width=w,
                            original_height=h))
    body["task"].update(id=spec.ls_task_id, project=spec.ls_project_id, updated_at=updated,
                        data={"image": f"http://127.0.0.1/files/images/{spec.ls_task_id}",
                              "image_id": str(spec.ls_task_id)})
    body["project"]["id"] = spec.ls_project_id
    return body, ann_id, updated


def _plan(tasks: list[TaskSpec], classes: list[str], config: str, n_events: int,
          replay_frac: float, quick_frac: float, seed: int = 5) -> Plan:
    """Creates for every task (shuffled), then updates of random tasks (``quick_frac``
    of them right behind the task's previous event), replays mixed in later."""
    rng = random.Random(seed)
    template = _template(config)
    slot_of = {t.ls_task_id: i for i, t in enumerate(tasks)}
    order = rng.sample(tasks, len(tasks))[:n_events]
    order += [rng.choice(tasks) for _ in range(n_events - len(order))]
    versions: Counter[int] = Counter()
    plan = Plan(ann_ids=[LS_ANN0 + t.ls_task_id for t in tasks], ann_ws=[t.ws for t in tasks],
                events=[[] for _ in tasks])
    # (sort key, body, is replay, workspace, slot, version)
    keyed: list[tuple[float, bytes, bool, int, int, int]] = []
    last_key: dict[int, float] = {}
    for i, spec in enumerate(order):
        tid = spec.ls_task_id
        version = versions[tid]
        body, ann_id, updated = _event(template, spec, version, classes, rng)
        quick = version > 0 and rng.random() < quick_frac
        key = last_key[tid] + rng.uniform(0.5, 3.0) if quick else float(i)
        versions[tid] += 1
        last_key[tid] = key
        plan.newest[tid] = (ann_id, updated)
        plan.events[slot_of[tid]].append(body)
        keyed.append((key, json.dumps(body).encode(), False, spec.ws, slot_of[tid], version))
    for _ in range(round(n_events * replay_frac)):
        key, body, _, ws, slot, version = keyed[rng.randrange(len(keyed))]
        keyed.append((key + rng.uniform(20, 400), body, True, ws, slot, version))
    keyed.sort(key=lambda k: k[0])
    plan.bodies = [k[1] for k in keyed]
    plan.is_replay = [k[2] for k in keyed]
    plan.ws = [k[3] for k in keyed]
    plan.slot = [k[4] for k in keyed]
    plan.version = [k[5] for k in keyed]
    return plan


# --- stub Label Studio ----------------------------------------------------------------

_ANNOTATION_PATH = re.compile(r"/api/annotations/(\d+)/?")


def _stub_serve(port: int, annotations: dict[int, tuple[int, int, list[bytes]]],
                tokens: list[str], held: Any, counts: Any, ready: Any) -> None:
    """The stub's process: ``GET /api/annotations/<id>/`` answered from ``annotations``
    (id -> slot, workspace index, JSON of each version) at version ``held[slot]``
    (-1: not saved in Label Studio yet); ``counts`` = answers 200, 403, 404."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    lock = threading.Lock()
    auth = [f"Token {t}" for t in tokens]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            match = _ANNOTATION_PATH.fullmatch(self.path)
            known = annotations.get(int(match[1])) if match else None
            if known is None:
                return self._answer(404, b'{"detail": "Not found."}')
            slot, ws, versions = known
            if self.headers.get("Authorization") != auth[ws]:
                # Label Studio: another organization's annotation is not this user's to read
                return self._answer(403, b'{"detail": "You do not have permission."}')
            version = held[slot]
            if version < 0:
                return self._answer(404, b'{"detail": "Not found."}')
            return self._answer(200, versions[version])

        def _answer(self, status: int, body: bytes) -> None:
            with lock:
                counts[{200: 0, 403: 1}.get(status, 2)] += 1
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    ready.set()
    server.serve_forever()


class StubLabelStudio:
    """Label Studio's annotation API for the plan's annotations, in its own process.

    ``held[slot]`` is the version Label Studio holds: the senders raise it to the
    version of each event just before sending it (Label Studio saves, then sends);
    with ``final`` every slot holds its newest version from the start.
    """

    def __init__(self, plan: Plan, workspaces: list[WsSpec], final: bool) -> None:
        self._ctx = multiprocessing.get_context("spawn")
        self.held = self._ctx.Array("i", [len(v) - 1 if final else -1 for v in plan.events],
                                    lock=False)
        self.counts = self._ctx.Array("q", 3, lock=False)
        self._annotations = {
            plan.ann_ids[s]: (s, plan.ann_ws[s],
                              [json.dumps(e["annotation"]).encode() for e in plan.events[s]])
            for s in range(len(plan.events))}
        self._tokens = [w.service_token for w in workspaces]
        self._proc: Any = None

    def start(self, port: int, timeout: float = 30.0) -> None:
        ready = self._ctx.Event()
        self._proc = self._ctx.Process(
            target=_stub_serve, name="stub-label-studio", daemon=True,
            args=(port, self._annotations, self._tokens, self.held, self.counts, ready))
        self._proc.start()
        deadline = time.monotonic() + timeout
        while not ready.wait(0.1):
            self.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError("the stub Label Studio did not start")

    def hold(self, slot: int, version: int) -> int:
        """Label Studio now holds at least ``version`` of ``slot``; returns what it holds."""
        if self.held[slot] < version:
            self.held[slot] = version
        return self.held[slot]

    def check_alive(self) -> None:
        if self._proc is not None and not self._proc.is_alive():
            raise RuntimeError(f"the stub Label Studio exited with {self._proc.exitcode}")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.join(5)
            self._proc = None


# --- senders --------------------------------------------------------------------------


@dataclass
class Phase:
    """Outcome of one load phase."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    duplicates: int = 0
    reconnects: int = 0
    unsent: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def pct_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies, q) * 1e3) if self.latencies else float("nan")


class _Sender:
    """One keep-alive connection; re-opens it if the server closed an idle one."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.reconnects = 0

    def send(self, method: str, path: str, body: bytes | None,
             headers: dict[str, str]) -> tuple[int, bytes]:
        for attempt in (0, 1):
            try:
                self.conn.request(method, path, body=body, headers=headers)
                resp = self.conn.getresponse()
                return resp.status, resp.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                # Safe to resend: the receiver stores an event once per body digest.
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                self.reconnects += 1
                if attempt:
                    raise
        raise AssertionError("unreachable")


#: one request of a phase: path, body, headers
Request = tuple[str, bytes | None, dict[str, str]]


def _run_phase(port: int, n_senders: int, method: str, reqs: list[Request],
               max_seconds: float, on_take: Callable[[int], None] | None = None) -> Phase:
    """Send ``reqs`` in order from ``n_senders`` threads, back to back, bounded in time;
    ``on_take(i)`` runs (serialised) when a sender takes request ``i``, before it sends."""
    phase = Phase()
    lock = threading.Lock()
    cursor = iter(range(len(reqs)))
    deadline = time.monotonic() + max_seconds

    def work() -> None:
        sender = _Sender(port)
        lat: list[float] = []
        codes: Counter = Counter()
        dups = 0
        while time.monotonic() < deadline:
            with lock:
                i = next(cursor, None)
                if i is not None and on_take is not None:
                    on_take(i)
            if i is None:
                break
            path, body, headers = reqs[i]
            t0 = time.perf_counter()
            status, data = sender.send(method, path, body, headers)
            lat.append(time.perf_counter() - t0)
            codes[status] += 1
            dups += status == 200 and method == "POST" and json.loads(data)["duplicate"]
        sender.conn.close()
        with lock:
            phase.latencies += lat
            phase.statuses.update(codes)
            phase.duplicates += dups
            phase.reconnects += sender.reconnects

    threads = [threading.Thread(target=work, daemon=True) for _ in range(n_senders)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    phase.seconds = time.perf_counter() - t0
    phase.unsent = len(reqs) - sum(phase.statuses.values())
    return phase


def _warm_up(port: int, n_senders: int, ws: WsSpec) -> None:
    """Connections, imports and URL resolution warmed; wrong secret, so nothing is stored
    but one bodiless refusal (identical bodies), which the load's counts leave out."""
    _run_phase(port, n_senders, "GET", [("/health/", None, {})] * (20 * n_senders), 30)
    bad = {"Content-Type": "application/json", SECRET_HEADER: "wrong"}
    phase = _run_phase(port, n_senders, "POST", [(ws.path, b"{}", bad)] * (5 * n_senders), 30)
    if set(phase.statuses) != {403}:
        raise RuntimeError(f"warm-up webhooks answered {dict(phase.statuses)}, expected 403")


# --- processes ------------------------------------------------------------------------


def _start_web(procs: Processes, env: dict[str, str], work: Path,
               args: argparse.Namespace) -> int:
    port = free_port()
    procs.start("gunicorn", [
        str(Path(sys.executable).parent / "gunicorn"), "cxr_platform.wsgi:application",
        "--bind", f"127.0.0.1:{port}", "--worker-class", "gthread",
        "--workers", str(args.web_workers), "--threads", str(args.web_threads),
        "--keep-alive", "30", "--log-level", "warning",
    ], env, work / "gunicorn.log", cwd=str(Path.cwd()))
    wait_http(f"http://127.0.0.1:{port}/health/", procs)
    return port


def _start_worker(procs: Processes, env: dict[str, str], work: Path,
                  args: argparse.Namespace) -> None:
    procs.start("celery", [
        str(Path(sys.executable).parent / "celery"), "-A", "cxr_platform", "worker",
        "-Q", "default", "-c", str(args.celery_concurrency), "--loglevel", "WARNING",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ], env, work / "celery.log", cwd=str(Path.cwd()))


def _flush_broker() -> None:
    import redis

    redis.Redis.from_url(BROKER).flushdb()


# --- drain and checks -----------------------------------------------------------------


def _events(floor: int):
    """The load's events: stored after ``floor`` (the warm-up's refusal, the probe and
    the forged-event check come before)."""
    from annotations.models import WebhookEvent

    return WebhookEvent.objects.filter(pk__gt=floor)


def _last_event_id() -> int:
    from django.db.models import Max

    from annotations.models import WebhookEvent

    return WebhookEvent.objects.aggregate(last=Max("id"))["last"] or 0


def _wait_processed(event_ids: list[int], procs: Processes, stub: StubLabelStudio,
                    timeout: float, what: str) -> None:
    from annotations.models import WebhookEvent

    deadline = time.monotonic() + timeout
    while WebhookEvent.objects.filter(pk__in=event_ids,
                                      status=WebhookEvent.Status.PENDING).exists():
        procs.check_alive()
        stub.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"the Celery worker did not process {what}")
        time.sleep(0.2)


def _wait_worker(port: int, ws: WsSpec, procs: Processes, stub: StubLabelStudio,
                 timeout: float = 90.0) -> None:
    """Send one probe event and wait until the worker has processed it."""
    body = json.dumps({"action": PROBE_ACTION, "nonce": secrets.token_hex(8)}).encode()
    status, data = _Sender(port).send("POST", ws.path, body, ws.headers)
    if status != 200:
        raise RuntimeError(f"probe webhook answered {status}: {data[:200]!r}")
    _wait_processed([json.loads(data)["event"]], procs, stub, timeout, "the probe event")


def _forged_check(port: int, plan: Plan, workspaces: list[WsSpec], stub: StubLabelStudio,
                  procs: Processes, timeout: float = 90.0) -> str:
    """Events with a valid secret, exactly what Label Studio holds but for ``completed_by``
    (another workspace's reader): all must end rejected, creating nothing."""
    from annotations.models import ProtocolViolation, ReaderAnnotation, WebhookEvent

    slots = [s for s in range(len(plan.events)) if plan.events[s]]
    slots = random.Random(11).sample(slots, min(FORGED, len(slots)))
    before = (ReaderAnnotation.objects.count(), ProtocolViolation.objects.count())
    looked_up = stub.counts[0]
    sender, ids = _Sender(port), []
    for slot in slots:
        ws = workspaces[plan.ann_ws[slot]]
        # the reader saved it in Label Studio (its own webhook comes later, in the load)
        body = copy.deepcopy(plan.events[slot][stub.hold(slot, 0)])
        other = workspaces[(plan.ann_ws[slot] + 1) % len(workspaces)].ls_reader_user_id
        body["annotation"].update(completed_by=other, updated_by=other)
        status, data = sender.send("POST", ws.path, json.dumps(body).encode(), ws.headers)
        if status != 200 or json.loads(data)["duplicate"]:
            raise RuntimeError(f"forged event answered {status}: {data[:200]!r}")
        ids.append(json.loads(data)["event"])
    sender.conn.close()
    _wait_processed(ids, procs, stub, timeout, "the forged events")
    outcome = Counter(
        f"{status}: {reason.split(':')[0]}" for status, reason in WebhookEvent.objects.filter(
            pk__in=ids).values_list("status", "reason"))
    after = (ReaderAnnotation.objects.count(), ProtocolViolation.objects.count())
    line = (f"forged-event check: {len(ids)} events with a valid secret and a rewritten "
            f"completed_by -> {dict(outcome)}; {after[0] - before[0]} reader annotations and "
            f"{after[1] - before[1]} protocol violations created; "
            f"{stub.counts[0] - looked_up} Label Studio lookups")
    if outcome.get("rejected: forged_webhook", 0) != len(ids) or after != before:
        raise RuntimeError(line + ": FAILED")
    return line + ": passed"


def _status_counts(floor: int) -> Counter:
    from django.db.models import Count

    rows = _events(floor).values("status").annotate(n=Count("id"))
    return Counter({r["status"]: r["n"] for r in rows})


def _outcomes(floor: int) -> Counter:
    """Statuses, with rejections split into stale (correct: an older version than Label
    Studio holds) and other."""
    outcomes: Counter = Counter()
    for status, reason in _events(floor).values_list("status", "reason"):
        if status == "rejected":
            status = "rejected-stale" if reason.startswith("stale_webhook") else "rejected-other"
        outcomes[status] += 1
    return outcomes


def _drain(floor: int, timeout: float, procs: Processes, stub: StubLabelStudio
           ) -> tuple[Counter, float]:
    """Poll until no event is pending (or timeout); returns counts and seconds waited."""
    t0 = time.perf_counter()
    while True:
        counts = _status_counts(floor)
        if counts.get("pending", 0) == 0 or time.perf_counter() - t0 > timeout:
            return counts, time.perf_counter() - t0
        procs.check_alive()
        stub.check_alive()
        time.sleep(0.25)


def _processing_rate(floor: int) -> float:
    from django.db.models import Max, Min

    span = _events(floor).exclude(processed_at=None).aggregate(
        first=Min("processed_at"), last=Max("processed_at"))
    done = _events(floor).exclude(processed_at=None).count()
    if done < 2:
        return 0.0
    return (done - 1) / max((span["last"] - span["first"]).total_seconds(), 1e-9)


def _task_errors(log: Path) -> Counter:
    """Celery tasks that raised (their event stays pending), by exception type."""
    errors: Counter = Counter()
    if log.exists():
        for line in log.read_text(errors="replace").splitlines():
            if " raised unexpected: " in line:
                errors[line.split(" raised unexpected: ", 1)[1].split("(", 1)[0]] += 1
    return errors


def _effects_ok(plan: Plan) -> tuple[int, int]:
    """How many tasks hold exactly the newest version sent for them (of how many)."""
    from django.utils.dateparse import parse_datetime

    from annotations.models import ReaderAnnotation, WorkspaceTask

    current = {(a.image_id, a.reader_id): a for a in ReaderAnnotation.objects.filter(
        is_current=True, source="label_studio")}
    good = 0
    tasks = WorkspaceTask.objects.filter(ls_task_id__in=plan.newest).select_related("workspace")
    for t in tasks:
        ann_id, updated = plan.newest[t.ls_task_id]
        a = current.get((t.image_id, t.workspace.reader_id))
        good += bool(a and a.external_id == str(ann_id)
                     and a.external_updated_at == parse_datetime(updated))
    return good, len(plan.newest)


def _consensus_counts() -> dict[str, int]:
    from django.db.models import Count

    from annotations.models import ConsensusRun

    rows = ConsensusRun.objects.values("status").annotate(n=Count("id"))
    return {r["status"]: r["n"] for r in rows}


def _rejections(floor: int) -> list[tuple[str, int]]:
    reasons = Counter(r.split(":")[0] for r in _events(floor).filter(
        status__in=["rejected", "ignored"]).values_list("reason", flat=True))
    return reasons.most_common(3)


# --- main -----------------------------------------------------------------------------


@dataclass
class Results:
    """What the report needs besides the plan and the phases."""

    floor: int
    backlog: int
    counts: Counter
    outcomes: Counter
    waited: float
    effects: tuple[int, int]
    errors: Counter
    forged: str
    lookups: tuple[int, int, int]


def _report(args: argparse.Namespace, plan: Plan, health: Phase, hooks: Phase,
            res: Results) -> bool:
    counts, outcomes, effects = res.counts, res.outcomes, res.effects
    stored = sum(counts.values())
    sent_distinct = plan.distinct - _unsent_distinct(plan, hooks)
    replays_sent = len(plan.bodies) - hooks.unsent - sent_distinct
    pending = counts.get("pending", 0)
    lost = max(0, sent_distinct - stored) + pending
    processed, stale = outcomes.get("processed", 0), outcomes.get("rejected-stale", 0)
    other, ignored = outcomes.get("rejected-other", 0), outcomes.get("ignored", 0)
    print(f"baseline GET /health/: {health.ok} requests, {health.rate:.0f} req/s, "
          f"p50 {health.pct_ms(50):.1f} ms, p99 {health.pct_ms(99):.1f} ms")
    print(res.forged)
    print(f"webhook acks: {hooks.ok} of {len(plan.bodies) - hooks.unsent} answered 200 "
          f"(other: {dict((k, v) for k, v in hooks.statuses.items() if k != 200) or 'none'}), "
          f"{hooks.duplicates} acknowledged as duplicate of {replays_sent} replays sent, "
          f"{hooks.reconnects} reconnects, {hooks.unsent} not sent (time bound)")
    print(f"worker: backlog {res.backlog} pending when the senders stopped, drained in "
          f"{res.waited:.1f} s; processing {_processing_rate(res.floor):.0f} events/s "
          f"(first to last processed); {processed} processed, {stale} rejected as stale, "
          f"{other} other rejected, {ignored} ignored, {pending} pending; "
          f"rejected/ignored reasons {_rejections(res.floor) or 'none'}; "
          f"worker task errors {dict(res.errors) or 'none'}")
    print(f"stub Label Studio ({args.ls_holds}): {res.lookups[0]} annotation lookups "
          f"answered 200, {res.lookups[1]} 403, {res.lookups[2]} 404 (whole run)")
    print(f"consensus runs triggered by completed reads: {_consensus_counts() or 'none'}")
    print(f"effects: {effects[0]}/{effects[1]} tasks hold the newest version sent"
          if effects[1] else "effects: not checked (some events were not sent)")
    met = (hooks.unsent == 0 and hooks.rate >= TARGET_RATE and hooks.pct_ms(99) < TARGET_P99_MS
           and lost == 0 and effects[0] == effects[1] and hooks.duplicates == replays_sent
           and other == 0)
    print(f"webhooks: {sent_distinct} sent (+{replays_sent} replays), {stored} stored, "
          f"{processed} processed, {stale} rejected as stale, {other} other rejected, "
          f"{ignored} ignored, {lost} lost; ack {hooks.rate:.0f} events/s, "
          f"p50 {hooks.pct_ms(50):.1f} ms, p99 {hooks.pct_ms(99):.1f} ms "
          f"(targets >= {TARGET_RATE:.0f}/s, p99 < {TARGET_P99_MS:.0f} ms: "
          f"{'met' if met else 'NOT met'}); ratio vs /health/ baseline "
          f"{hooks.rate / health.rate if health.rate else float('nan'):.2f} "
          f"({args.senders} senders, {os.cpu_count()} cores)")
    return met


def _unsent_distinct(plan: Plan, hooks: Phase) -> int:
    """Senders take bodies in order, so the unsent ones are the plan's tail."""
    tail = plan.is_replay[len(plan.is_replay) - hooks.unsent:] if hooks.unsent else []
    return sum(not r for r in tail)


def _close_db() -> None:
    """Close this process's connections so that the temporary database can be dropped."""
    from django.conf import settings

    if settings.configured:
        from django.db import connections

        connections.close_all()


def _setup_django(env: dict[str, str]) -> None:
    os.environ.update(env)
    import django

    django.setup()


def _bench(args: argparse.Namespace, work: Path, db_url: str, procs: Processes) -> bool:
    ls_port = free_port()
    env = _platform_env(work / "var", db_url, f"http://127.0.0.1:{ls_port}")
    _setup_django(env)
    from django.core.management import call_command
    from django.db import connections

    t0 = time.perf_counter()
    call_command("migrate", verbosity=0)
    tasks, workspaces, classes, config = _seed(work, args.images)
    plan = _plan(tasks, classes, config, args.events, args.replays, args.quick_edits)
    connections.close_all()
    size = sum(map(len, plan.bodies)) / len(plan.bodies)
    print(f"seeded {args.images} images, {len(tasks)} workspace tasks in {len(workspaces)} "
          f"workspaces; planned {plan.distinct} distinct webhooks + "
          f"{len(plan.bodies) - plan.distinct} replays "
          f"(mean body {size / 1024:.1f} KiB) in {time.perf_counter() - t0:.1f} s")
    stub = StubLabelStudio(plan, workspaces, final=args.ls_holds == "final")
    stub.start(ls_port)
    try:
        return _load(args, work, env, plan, workspaces, stub, procs)
    finally:
        stub.stop()
        connections.close_all()


def _load(args: argparse.Namespace, work: Path, env: dict[str, str], plan: Plan,
          workspaces: list[WsSpec], stub: StubLabelStudio, procs: Processes) -> bool:
    _flush_broker()
    port = _start_web(procs, env, work, args)
    if not args.worker_after_acks:
        _start_worker(procs, env, work, args)
    _warm_up(port, args.senders, workspaces[0])
    if args.worker_after_acks:
        forged = "forged-event check: skipped (--worker-after-acks)"
    else:
        _wait_worker(port, workspaces[0], procs, stub)
        forged = _forged_check(port, plan, workspaces, stub, procs)
    floor = _last_event_id()
    health = _run_phase(port, args.senders, "GET", [("/health/", None, {})] * len(plan.bodies),
                        args.max_seconds)
    reqs = [(workspaces[w].path, body, workspaces[w].headers)
            for w, body in zip(plan.ws, plan.bodies, strict=True)]

    def saved_in_label_studio(i: int) -> None:  # Label Studio saves, then sends
        stub.hold(plan.slot[i], plan.version[i])

    hooks = _run_phase(port, args.senders, "POST", reqs, args.max_seconds,
                       on_take=saved_in_label_studio)
    backlog = _status_counts(floor).get("pending", 0)
    if args.worker_after_acks:
        _start_worker(procs, env, work, args)
    counts, waited = _drain(floor, args.drain_timeout, procs, stub)
    effects = _effects_ok(plan) if hooks.unsent == 0 else (0, 0)
    res = Results(floor=floor, backlog=backlog, counts=counts, outcomes=_outcomes(floor),
                  waited=waited, effects=effects, errors=_task_errors(work / "celery.log"),
                  forged=forged, lookups=(stub.counts[0], stub.counts[1], stub.counts[2]))
    return _report(args, plan, health, hooks, res)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    procs = Processes()
    try:
        with temporary_database(PG_SERVER, DB_NAME) as db_url:
            try:
                met = _bench(args, work, db_url, procs)
            finally:
                procs.stop_all()
                _flush_broker()
                _close_db()
    finally:
        if args.keep:
            print(f"logs kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
