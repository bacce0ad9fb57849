"""Faults against the production topology (``scripts/stack``): real processes, real
signals, real PostgreSQL, Redis and Label Studio.  Each case injects one fault, then checks
that nothing was lost and the project goes on; each adds a row to the table printed at the
end of the session (fault, runs affected, final states, annotations Label Studio holds vs
the platform, time to recover).

To hold a worker mid-run without test hooks in the product, a case locks the table the
run writes next (``LOCK TABLE ... IN EXCLUSIVE MODE``: reads go on, the worker waits in
its transaction, as on a stalled disk) and kills the worker while it waits.  The sweep is
called by hand with a short timeout (``manage.py sweep_runs --timeout``) instead of
waiting for beat's, and the gpu worker heartbeats every second.  PostgreSQL and Redis are
this machine's, shared: "restart PostgreSQL" ends every session of the stack's platform
database and refuses new ones for a while; Redis is the stack's own ``redis-server``
(compose's command), killed, its data lost, and started again.

Cases run in file order on one project, each on data the one before left.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import redis
import requests

from cxr_platform.stack import databases
from tests.stack.harness import (
    FAULT_TABLE,
    FaultRow,
    admin_session,
    annotate,
    image_sizes,
    images_of,
    ls_project_of,
    ls_reads,
    open_tasks,
    platform_reads,
    project_create,
    query,
    reader_create,
    run_states,
    scalar,
    table_locked,
    upload_films,
    wait,
    waiting_on,
)

pytestmark = pytest.mark.slow

SLUG = "faults"
LONG = {"preset": "tiny", "max_iter": 5000, "ims_per_batch": 2, "base_lr": 0.02,
        "val_fraction": 0.0, "checkpoint_period": 100000}
SHORT = {**LONG, "max_iter": 40}
FINAL = ("done", "failed", "cancelled")


def sweep(stack, timeout: float | None = None, pending: float | None = None) -> str:
    args = ["sweep_runs"]
    if timeout is not None:
        args += ["--timeout", str(timeout)]
    if pending is not None:
        args += ["--pending-timeout", str(pending)]
    out = stack.manage(*args, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def sweep_until(stack, done, *, timeout: float = 2, within: float = 240, **kw) -> None:
    """Sweep every two seconds until ``done()`` (the sweep's timeout, not beat's)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        sweep(stack, timeout, **kw)
        if done():
            return
        time.sleep(2)
    pytest.fail(f"not recovered after {within} s")


def missing_files(stack) -> int:
    """Images whose display derivative is not on disk (a half-stored image)."""
    out = stack.manage("shell", "-c", (
        "from annotations.models import Image\n"
        "from annotations.services.storage import media_path\n"
        "print(sum(not media_path(i.display_path).is_file() for i in Image.objects.all()))"))
    assert out.returncode == 0, out.stderr[-2000:]
    return int(out.stdout.strip().splitlines()[-1])


def project_runs(stack, table: str, slug: str = SLUG) -> dict[int, str]:
    return dict(query(stack, f"SELECT r.id, r.status FROM {table} r JOIN annotations_project p"  # noqa: S608
                      " ON p.id = r.project_id WHERE p.slug = %s", slug))


def all_final(stack, table: str, slug: str = SLUG) -> bool:
    return all(s in FINAL for s in project_runs(stack, table, slug).values())


def assign_and_push(stack, world, seeds) -> None:
    """New films in the project, assigned and pushed (the handlers push them)."""
    before = images_of(stack, SLUG)
    upload_films(stack, world.admin, SLUG, seeds)
    wait(lambda: images_of(stack, SLUG) == before + len(seeds), 240, stack, "worker-ingest")
    r = world.admin.post(f"{stack.url('platform')}/api/projects/{SLUG}/assignments/", timeout=60)
    assert r.status_code == 201, r.text
    wait(lambda: all(len(open_tasks(stack, rd, SLUG)) >= len(seeds) for rd in world.readers),
         240, stack, "worker-default")


def versions(stack, slug: str = SLUG) -> list[tuple[str, bool]]:
    return query(stack, "SELECT v.name, v.promoted FROM annotations_modelversion v JOIN "
                 "annotations_project p ON p.id = v.project_id WHERE p.slug = %s ORDER BY v.id",
                 slug)


class World:
    def __init__(self, admin, readers) -> None:
        self.admin = admin
        self.readers = readers


@pytest.fixture(scope="module")
def world(stack):
    """Ten films read by two readers through Label Studio, final by consensus; three gold."""
    admin = admin_session(stack, "faults-admin@example.org")
    project_create(stack, admin, SLUG)
    upload_films(stack, admin, SLUG, range(400, 410))
    wait(lambda: images_of(stack, SLUG) == 10, 240, stack, "worker-ingest")
    readers = [reader_create(stack, admin, code) for code in ("F1", "F2")]
    # readers are platform-wide and assignment balances over every active one: the loop
    # test's readers step aside (no API for that yet), so F1 and F2 read every image
    query(stack, "UPDATE annotations_reader SET active = false WHERE code NOT IN ('F1', 'F2')")
    base = stack.url("platform")
    r = admin.post(f"{base}/api/projects/{SLUG}/assignments/", timeout=60)
    assert r.status_code == 201, r.text
    r = admin.post(f"{base}/api/projects/{SLUG}/label-studio/push/", timeout=300)
    assert r.status_code < 300, r.text
    gold = [row[0] for row in query(stack, "SELECT i.id FROM annotations_image i JOIN "
                                    "annotations_project p ON p.id = i.project_id WHERE "
                                    "p.slug = %s ORDER BY i.id", SLUG)][7:]
    query(stack, "UPDATE annotations_image SET is_gold = true WHERE id = ANY(%s)", gold)
    for j, reader in enumerate(readers):
        for task in open_tasks(stack, reader, SLUG):
            assert annotate(stack, reader, SLUG, task, shift=j).status_code == 201
    wait(lambda: scalar(stack, "SELECT count(DISTINCT c.image_id) FROM annotations_consensusimage"
                        " c JOIN annotations_image i ON i.id = c.image_id JOIN "
                        "annotations_project p ON p.id = i.project_id WHERE p.slug = %s",
                        SLUG) == 10, 300, stack, "worker-default")
    return World(admin, readers)


def _training(stack, world, params) -> int:
    r = world.admin.post(f"{stack.url('platform')}/api/projects/{SLUG}/training-runs/",
                         json={"params": params}, timeout=30)
    assert r.status_code == 202, r.text
    return r.json()["id"]


def test_sigkill_of_the_gpu_worker_mid_training_fails_the_run_and_a_new_one_succeeds(
        stack, world):
    registry = versions(stack)
    run = _training(stack, world, LONG)
    wait(lambda: scalar(stack, "SELECT coalesce((progress->>'iteration')::int, 0) FROM "
                        "annotations_trainingrun WHERE id = %s", run) >= 3, 300, stack,
         "worker-gpu")
    t0 = time.monotonic()
    stack.kill("worker-gpu")
    stack.start("worker-gpu")
    sweep_until(stack, lambda: run_states(stack, "annotations_trainingrun", [run])[run]
                in FINAL, timeout=3)
    recovered = time.monotonic() - t0
    status, reason = query(stack, "SELECT status, reason FROM annotations_trainingrun "
                           "WHERE id = %s", run)[0]
    assert status == "failed" and "worker lost" in reason
    assert versions(stack) == registry  # nothing registered by the lost run
    again = _training(stack, world, SHORT)  # the one-training slot is free again
    wait(lambda: run_states(stack, "annotations_trainingrun", [again])[again] in FINAL, 900,
         stack, "worker-gpu")
    assert run_states(stack, "annotations_trainingrun", [again])[again] == "done"
    assert [p for _, p in versions(stack)] == [True]
    FAULT_TABLE.append(FaultRow("SIGKILL gpu worker mid-training", f"training {run}",
                                f"failed (worker lost); new training {again} done, promoted",
                                "-", recovered))


def test_sigkill_of_the_default_worker_mid_consensus_leaves_nothing_half_stored(stack, world):
    with table_locked(stack, "annotations_consensusimage"):
        r = world.admin.post(f"{stack.url('platform')}/api/projects/{SLUG}/consensus-runs/",
                             json={"strategy": "wbf"}, timeout=30)
        assert r.status_code == 202, r.text
        run = r.json()["id"]
        wait(lambda: waiting_on(stack, "annotations_consensusimage"), 120, stack,
             "worker-default")
        t0 = time.monotonic()
        stack.kill("worker-default")
    assert scalar(stack, "SELECT count(*) FROM annotations_consensusimage WHERE run_id = %s",
                  run) == 0
    stack.start("worker-default")
    sweep_until(stack, lambda: run_states(stack, "annotations_consensusrun", [run])[run]
                in FINAL)
    recovered = time.monotonic() - t0
    status, attempts, stats = query(stack, "SELECT status, attempts, stats FROM "
                                    "annotations_consensusrun WHERE id = %s", run)[0]
    stored = scalar(stack, "SELECT count(*) FROM annotations_consensusimage WHERE run_id = %s",
                    run)
    assert status == "done" and attempts == 2
    assert stored == stats["images"] == 10  # stored once, whole
    assert all_final(stack, "annotations_consensusrun")
    FAULT_TABLE.append(FaultRow("SIGKILL default worker mid-consensus", f"consensus {run}",
                                f"done after re-queue (attempt {attempts}), {stored} images",
                                "-", recovered))


def test_sigkill_of_the_ingest_worker_mid_batch_imports_every_file_once(stack, world):
    before = images_of(stack, SLUG)
    stack.stop("worker-ingest")  # the batch is staged while no worker takes it
    batch = upload_films(stack, world.admin, SLUG, range(420, 426))
    with table_locked(stack, "annotations_image"):
        stack.start("worker-ingest")
        wait(lambda: waiting_on(stack, "annotations_image"), 120, stack, "worker-ingest")
        t0 = time.monotonic()
        stack.kill("worker-ingest")
    stack.start("worker-ingest")
    sweep_until(stack, lambda: scalar(stack, "SELECT count(*) FROM annotations_ingestitem "
                                      "WHERE batch_id = %s AND status = 'pending'", batch) == 0)
    recovered = time.monotonic() - t0
    statuses = dict(query(stack, "SELECT status, count(*) FROM annotations_ingestitem "
                          "WHERE batch_id = %s GROUP BY status", batch))
    assert statuses == {"imported": 6}
    assert images_of(stack, SLUG) == before + 6
    assert missing_files(stack) == 0  # no image row without its derivative
    wait(lambda: run_states(stack, "annotations_ingestbatch", [batch])[batch] == "done", 120,
         stack, "worker-ingest", interval=2)
    FAULT_TABLE.append(FaultRow("SIGKILL ingest worker mid-batch", f"ingest batch {batch}",
                                "done: 6 of 6 imported, no half-stored image", "-", recovered))


def test_sigkill_of_the_gpu_worker_mid_prelabel_stores_one_prediction_per_image(stack, world):
    version = next(name for name, promoted in versions(stack) if promoted)
    with table_locked(stack, "annotations_prediction"):
        r = world.admin.post(f"{stack.url('platform')}/api/projects/{SLUG}/prelabel-runs/",
                             json={}, timeout=30)
        assert r.status_code == 202, r.text
        run = r.json()["id"]
        wait(lambda: waiting_on(stack, "annotations_prediction"), 300, stack, "worker-gpu")
        t0 = time.monotonic()
        stack.kill("worker-gpu")
    stack.start("worker-gpu")
    sweep_until(stack, lambda: all_final(stack, "annotations_prelabelrun"))
    recovered = time.monotonic() - t0
    states = project_runs(stack, "annotations_prelabelrun")
    assert set(states.values()) == {"done"}, states
    total, done = query(stack, "SELECT total, done FROM annotations_prelabelrun WHERE id = %s",
                        run)[0]
    rows = query(stack, "SELECT p.image_id, count(*) FROM annotations_prediction p JOIN "
                 "annotations_image i ON i.id = p.image_id JOIN annotations_project pr ON "
                 "pr.id = i.project_id WHERE pr.slug = %s AND p.model_version = %s GROUP BY "
                 "p.image_id", SLUG, version)
    assert total == done == images_of(stack, SLUG) == len(rows)
    assert {n for _, n in rows} == {1}
    FAULT_TABLE.append(FaultRow("SIGKILL gpu worker mid-pre-label",
                                f"prelabel {sorted(states)}",
                                f"done after re-queue, {len(rows)} predictions, one per image",
                                "-", recovered))


def test_redis_lost_with_tasks_queued_the_sweep_requeues_them_and_every_run_finishes(
        stack, world):
    stack.stop("worker-gpu")
    stack.stop("worker-default")
    r = world.admin.post(f"{stack.url('platform')}/api/projects/{SLUG}/prelabel-runs/",
                         json={}, timeout=30)
    assert r.status_code == 202, r.text
    prelabel = r.json()["id"]
    r = world.admin.post(f"{stack.url('platform')}/api/projects/{SLUG}/consensus-runs/",
                         json={"strategy": "majority"}, timeout=30)
    assert r.status_code == 202, r.text
    consensus = r.json()["id"]
    broker = redis.Redis.from_url(stack.broker_url())
    wait(lambda: broker.llen("gpu") and broker.llen("default"), 30, stack, "platform")
    t0 = time.monotonic()
    stack.kill("redis")
    argv = stack.process("redis").argv
    shutil.rmtree(Path(argv[argv.index("--dir") + 1]), ignore_errors=True)  # its data: gone
    Path(argv[argv.index("--dir") + 1]).mkdir(parents=True)
    stack.start("redis")
    assert broker.llen("gpu") == broker.llen("default") == 0  # the queued tasks were lost
    stack.start("worker-gpu")
    stack.start("worker-default")
    sweep_until(stack, lambda: run_states(stack, "annotations_prelabelrun", [prelabel])[
        prelabel] in FINAL and run_states(stack, "annotations_consensusrun", [consensus])[
        consensus] in FINAL, timeout=600, pending=0, within=420)
    recovered = time.monotonic() - t0
    assert run_states(stack, "annotations_prelabelrun", [prelabel])[prelabel] == "done"
    assert run_states(stack, "annotations_consensusrun", [consensus])[consensus] == "done"
    for service in stack.services:
        assert stack.pid(service) is not None, f"{service} died with Redis"
    FAULT_TABLE.append(FaultRow("Redis lost with tasks queued",
                                f"prelabel {prelabel}, consensus {consensus}",
                                "both done after the sweep re-queued them", "-", recovered))


def test_postgresql_restart_during_a_webhook_burst_loses_no_annotation(stack, world):
    assign_and_push(stack, world, range(430, 434))
    tasks = {rd.code: open_tasks(stack, rd, SLUG) for rd in world.readers}
    sizes = image_sizes(stack, [t for ts in tasks.values() for t in ts])
    ws = scalar(stack, "SELECT w.id FROM annotations_workspace w JOIN annotations_project p ON "
                "p.id = w.project_id WHERE p.slug = %s AND w.kind = 'reading' LIMIT 1", SLUG)
    platform_db = [stack.db_names["platform"]]
    with databases.admin(*stack.pg) as cur:
        databases.allow_connections(cur, platform_db, False)
        databases.terminate_backends(cur, platform_db)
    t0 = time.monotonic()
    try:
        for j, reader in enumerate(world.readers):
            for task in tasks[reader.code]:
                made = annotate(stack, reader, SLUG, task, shift=j, size=sizes[
                    task["data"]["image_id"]])
                assert made.status_code == 201, made.text  # Label Studio keeps every read
        door = requests.post(f"{stack.url('platform')}/api/label-studio/webhook/{ws}/",
                             json={"action": "ANNOTATION_CREATED"}, timeout=30,
                             headers={"X-Forwarded-Proto": "https"})
        assert door.status_code >= 500  # Label Studio sees the receiver fail
    finally:
        with databases.admin(*stack.pg) as cur:
            databases.allow_connections(cur, platform_db, True)
    missed = len(ls_reads(stack, SLUG) - platform_reads(stack, SLUG))
    r = world.admin.post(f"{stack.url('platform')}/api/label-studio/reconcile/", timeout=300)
    assert r.status_code == 200, r.text
    recovered = time.monotonic() - t0
    held, stored = ls_reads(stack, SLUG), platform_reads(stack, SLUG)
    assert held == stored and missed > 0
    FAULT_TABLE.append(FaultRow("PostgreSQL restart during a webhook burst",
                                f"reconcile {r.json()['run']}",
                                f"{missed} reads missed by webhooks, repaired",
                                f"{len(held)} / {len(stored)}", recovered))


def test_label_studio_stopped_while_readers_annotate_then_reconciled(stack, world):
    assign_and_push(stack, world, range(440, 444))
    first, second = world.readers
    tasks = {rd.code: open_tasks(stack, rd, SLUG) for rd in world.readers}
    sizes = image_sizes(stack, [t for ts in tasks.values() for t in ts])

    def read(reader, task, j):
        return annotate(stack, reader, SLUG, task, shift=j, size=sizes[task["data"]["image_id"]])

    for task in tasks[first.code][:2]:
        assert read(first, task, 0).status_code == 201
    assert read(second, tasks[second.code][0], 1).status_code == 201
    t0 = time.monotonic()
    stack.kill("label-studio")  # mid-burst: its webhook may be out, its re-read fails
    with pytest.raises(requests.ConnectionError):
        read(second, tasks[second.code][1], 1)
    stack.stop("platform")  # and webhooks fail while the readers go on
    stack.start("label-studio")
    for task in tasks[first.code][2:]:
        assert read(first, task, 0).status_code == 201
    for task in tasks[second.code][1:]:
        assert read(second, task, 1).status_code == 201
    stack.start("platform")
    missed = len(ls_reads(stack, SLUG) - platform_reads(stack, SLUG))
    r = world.admin.post(f"{stack.url('platform')}/api/label-studio/reconcile/", timeout=300)
    assert r.status_code == 200 and r.json()["failed_workspaces"] == [], r.text
    recovered = time.monotonic() - t0
    held, stored = ls_reads(stack, SLUG), platform_reads(stack, SLUG)
    assert held == stored and missed > 0
    FAULT_TABLE.append(FaultRow("Label Studio stopped while readers annotate",
                                f"reconcile {r.json()['run']}",
                                f"{missed} reads missed by webhooks, repaired",
                                f"{len(held)} / {len(stored)}", recovered))


def test_promoting_project_b_while_project_a_prelabels_keeps_a_on_its_own_version(
        stack, world):
    project_create(stack, world.admin, "faults-b")
    upload_films(stack, world.admin, "faults-b", range(460, 463))
    wait(lambda: images_of(stack, "faults-b") == 3, 240, stack, "worker-ingest")
    a_version = next(name for name, promoted in versions(stack) if promoted)
    b_version = "faults-b-imported"
    made = stack.manage("shell", "-c", (  # a version of B trained elsewhere, registered
        "import shutil\nfrom pathlib import Path\nfrom django.conf import settings\n"
        "from annotations.models import ModelVersion, Project\n"
        f"a = ModelVersion.objects.get(name={a_version!r})\n"
        "root = Path(settings.MODEL_DIR)\n"
        f"shutil.copytree(root / a.name, root / {b_version!r})\n"
        f"ModelVersion.objects.create(project=Project.objects.get(slug='faults-b'), "
        f"name={b_version!r}, sha256=a.sha256, config=a.config, metrics=a.metrics)\n"))
    assert made.returncode == 0, made.stderr[-2000:]
    with table_locked(stack, "annotations_prediction"):
        r = world.admin.post(f"{stack.url('platform')}/api/projects/{SLUG}/prelabel-runs/",
                             json={}, timeout=30)
        assert r.status_code == 202, r.text
        run = r.json()["id"]
        wait(lambda: waiting_on(stack, "annotations_prediction"), 300, stack, "worker-gpu")
        t0 = time.monotonic()
        r = world.admin.post(f"{stack.url('platform')}/api/model-versions/{b_version}/promote/",
                             timeout=60)
        assert r.status_code == 200, r.text
    wait(lambda: all_final(stack, "annotations_prelabelrun")
         and all_final(stack, "annotations_prelabelrun", "faults-b")
         and project_runs(stack, "annotations_prelabelrun", "faults-b"), 600, stack,
         "worker-gpu", interval=2)
    recovered = time.monotonic() - t0
    assert run_states(stack, "annotations_prelabelrun", [run])[run] == "done"
    carried = {slug: {row[0] for row in query(
        stack, "SELECT DISTINCT p.model_version FROM annotations_prediction p JOIN "
        "annotations_image i ON i.id = p.image_id JOIN annotations_project pr ON "
        "pr.id = i.project_id WHERE pr.slug = %s AND p.updated_at >= (SELECT created_at FROM "
        "annotations_prelabelrun WHERE id = %s)", slug, run)} for slug in (SLUG, "faults-b")}
    assert carried == {SLUG: {a_version}, "faults-b": {b_version}}
    assert [n for n, p in versions(stack) if p] == [a_version]
    FAULT_TABLE.append(FaultRow("promote in B while A pre-labels", f"prelabel {run} (A)",
                                f"A's predictions carry {a_version}, B's {b_version}", "-",
                                recovered))


def test_a_workspace_deleted_behind_the_platforms_back_is_reported_and_the_rest_repaired(
        stack, world):
    assign_and_push(stack, world, range(450, 453))
    first, second = world.readers
    gone = ls_project_of(stack, first.code, SLUG)
    token = scalar(stack, "SELECT service_token FROM annotations_workspace WHERE "
                   "ls_project_id = %s", gone)
    first_reads = len(platform_reads(stack, SLUG))
    deleted = requests.delete(f"{stack.url('label-studio')}/api/projects/{gone}/",
                              headers={"Authorization": f"Token {token}"}, timeout=60)
    assert deleted.status_code == 204, deleted.text
    tasks = open_tasks(stack, second, SLUG)
    sizes = image_sizes(stack, tasks)
    t0 = time.monotonic()
    stack.stop("platform")  # the second reader's webhooks fail: reconcile must repair them
    for task in tasks:
        assert annotate(stack, second, SLUG, task, shift=1,
                        size=sizes[task["data"]["image_id"]]).status_code == 201
    stack.start("platform")
    r = world.admin.post(f"{stack.url('platform')}/api/label-studio/reconcile/", timeout=300)
    assert r.status_code == 200, r.text
    recovered = time.monotonic() - t0
    report = r.json()
    assert [f["reader"] for f in report["failed_workspaces"]] == [first.code]
    kept = platform_reads(stack, SLUG)
    held = ls_reads(stack, SLUG)
    assert held <= kept and len(kept) == first_reads + len(tasks)
    assert report["created"] >= len(tasks)
    FAULT_TABLE.append(FaultRow("Label Studio workspace deleted behind our back",
                                f"reconcile {report['run']}",
                                f"its workspace reported; {len(tasks)} missed reads of the "
                                "other repaired", f"{len(held)} / {len(kept)} (deleted: kept)",
                                recovered))
