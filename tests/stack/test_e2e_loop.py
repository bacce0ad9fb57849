"""The loop once, against the stack (it runs first: the fault cases follow in
``test_stack_faults.py``): only HTTP and the stack's own workers.

Ingest through the platform's upload API (ingest worker), readers sign in through the
platform's link and annotate through Label Studio's API (webhook -> platform -> default
worker -> consensus), training and promotion on the gpu worker (tiny preset, CPU), and the
promoted model's pre-labels as predictions on the readers' Label Studio tasks.  The test
reads the platform's database only to check states and to mark the gold set (which has
no API).
"""

from __future__ import annotations

import pytest

from tests.stack.harness import (
    admin_session,
    annotate,
    images_of,
    open_tasks,
    project_create,
    query,
    reader_create,
    reader_sign_in,
    scalar,
    upload_films,
    wait,
)

pytestmark = pytest.mark.slow

SLUG = "stack-loop"
TRAIN = {"preset": "tiny", "max_iter": 40, "ims_per_batch": 2, "base_lr": 0.02,
         "val_fraction": 0.0, "checkpoint_period": 1000}
IN_PROJECT = ("JOIN annotations_image i ON i.id = {t}.image_id JOIN annotations_project p "
              "ON p.id = i.project_id WHERE p.slug = %s")


def _count(stack, table: str, extra: str = "") -> int:
    return scalar(stack, f"SELECT count(*) FROM {table} t "  # noqa: S608 - test's own SQL
                  + IN_PROJECT.format(t="t") + extra, SLUG)


def test_ingest_read_consensus_train_promote_prelabel(stack):
    run_loop(stack)


def run_loop(stack) -> None:
    """The loop through the stack's HTTP surfaces (also run on S3 stores, with every
    service on a data folder of its own: ``test_s3_stack.py``)."""
    base = stack.url("platform")
    admin = admin_session(stack, "owner@example.org")
    project_create(stack, admin, SLUG, show_prelabels=True)
    upload_films(stack, admin, SLUG, range(300, 310))
    wait(lambda: images_of(stack, SLUG) == 10, 240, stack, "worker-ingest")

    readers = [reader_create(stack, admin, code) for code in ("S1", "S2")]
    r = admin.post(f"{base}/api/projects/{SLUG}/assignments/", timeout=60)
    assert r.status_code == 201 and len(r.json()) == 20, r.text
    # the first push makes the readers' workspaces (later assignments are pushed by a worker)
    r = admin.post(f"{base}/api/projects/{SLUG}/label-studio/push/", timeout=300)
    assert r.status_code < 300, r.text
    wait(lambda: _count(stack, "annotations_workspacetask") == 20, 180, stack, "worker-default")
    gold = [row[0] for row in query(stack, "SELECT i.id FROM annotations_image i JOIN "
                                    "annotations_project p ON p.id = i.project_id WHERE "
                                    "p.slug = %s ORDER BY i.id", SLUG)][7:]
    query(stack, "UPDATE annotations_image SET is_gold = true WHERE id = ANY(%s)", gold)

    for j, reader in enumerate(readers):
        tasks = open_tasks(stack, reader, SLUG)
        assert len(tasks) == 10
        for task in tasks:
            made = annotate(stack, reader, SLUG, task, shift=j)
            assert made.status_code == 201, made.text

    wait(lambda: scalar(stack, "SELECT count(DISTINCT t.image_id) FROM "
                        "annotations_consensusimage t " + IN_PROJECT.format(t="t"), SLUG) == 10,
         300, stack, "worker-default")
    r = admin.post(f"{base}/api/projects/{SLUG}/training-runs/", json={"params": TRAIN},
                   timeout=30)
    assert r.status_code == 202, r.text
    run = r.json()["id"]
    status = wait(lambda: (s := admin.get(f"{base}/api/training-runs/{run}/", timeout=30)
                           .json())["status"] in ("done", "failed") and s, 900, stack,
                  "worker-gpu")
    assert status["status"] == "done", status
    versions = admin.get(f"{base}/api/projects/{SLUG}/model-versions/", timeout=30).json()
    versions = versions.get("results", versions) if isinstance(versions, dict) else versions
    assert any(v["promoted"] for v in versions), versions

    # the promotion pre-labels the open reading tasks; the push follows the run
    wait(lambda: _count(stack, "annotations_workspacetask", " AND t.prediction_id IS NOT NULL"),
         600, stack, "worker-gpu")
    task_id, code = query(stack, "SELECT t.ls_task_id, r.code FROM annotations_workspacetask t "
                          "JOIN annotations_workspace w ON w.id = t.workspace_id JOIN "
                          "annotations_reader r ON r.id = w.reader_id JOIN annotations_project "
                          "p ON p.id = w.project_id WHERE t.prediction_id IS NOT NULL AND "
                          "p.slug = %s LIMIT 1", SLUG)[0]
    reader = next(rd for rd in readers if rd.code == code)
    task = reader_sign_in(stack, reader, SLUG).get(
        f"{stack.url('label-studio')}/api/tasks/{task_id}/", timeout=30).json()
    assert task.get("total_predictions", 0) >= 1, task  # what the labeling screen shows
