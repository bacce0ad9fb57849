"""What the stack's tests do as users and operators: HTTP to the platform and Label Studio,
reads of the stack's databases to check states, table locks to hold a worker mid-run, and
the fault table the suite prints.

Only HTTP and real processes drive the stack; the databases are read (and the gold set
marked, which has no API) to check what happened.
"""

from __future__ import annotations

import contextlib
import io
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import psycopg2
import pytest
import requests

from annotations.label_studio.regions import build_result
from tests.training.films import TRUTH, film

#: The stack runs CXR_MODE=production, which redirects plain HTTP to HTTPS; the test is
#: the TLS proxy (SECURE_PROXY_SSL_HEADER) in front of the platform.
PROXY = {"X-Forwarded-Proto": "https"}
PASSWORD = "Reader-pass-4821-long"


def wait(what: Callable[[], Any], timeout: float, stack, service: str,
         interval: float = 1.0) -> Any:
    """``what()``'s first truthy value; fails with the service's log tail on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := what():
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout} s; {service} log:\n{stack.logs(service, 60)}\n"
                f"{diagnose(stack)}")


def diagnose(stack) -> str:
    """What the platform's database says when a wait timed out: work by state, and what
    each database session is doing (a worker stuck on a lock shows here)."""
    lines = []
    for table in ("annotations_webhookevent", "annotations_consensusrun",
                  "annotations_prelabelrun", "annotations_trainingrun",
                  "annotations_reconcilerun"):
        try:
            rows = query(stack, f"SELECT status, count(*) FROM {table} GROUP BY status")  # noqa: S608
        except psycopg2.Error as exc:
            rows = [("unreadable", str(exc).strip())]
        lines.append(f"{table}: {dict(rows)}")
    try:
        for row in query(stack, "SELECT pid, state, wait_event_type, wait_event, "
                         "left(query, 120) FROM pg_stat_activity WHERE datname = "
                         "current_database() AND pid <> pg_backend_pid()"):
            lines.append(f"session {row}")
    except psycopg2.Error as exc:
        lines.append(f"sessions unreadable: {exc}")
    return "\n".join(lines)


def query(stack, sql: str, *args: Any, service: str = "platform") -> list[tuple]:
    with psycopg2.connect(stack.database_url(service)) as conn, conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall() if cur.description else []


def scalar(stack, sql: str, *args: Any, service: str = "platform") -> Any:
    return query(stack, sql, *args, service=service)[0][0]


@contextlib.contextmanager
def table_locked(stack, table: str) -> Iterator[None]:
    """Writes to ``table`` wait while inside (reads go on): a worker that reaches its
    write is held mid-run, in its transaction, where a real slow disk would hold it."""
    conn = psycopg2.connect(stack.database_url())
    try:
        with conn.cursor() as cur:
            cur.execute(f"LOCK TABLE {table} IN EXCLUSIVE MODE")  # noqa: S608 - test's own
            yield
    finally:
        conn.rollback()
        conn.close()


def waiting_on(stack, table: str) -> int:
    """Backends of the platform's database waiting for a lock on ``table``."""
    return scalar(stack, "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                  "WHERE NOT l.granted AND c.relname = %s", table)


def api(token: str | None = None) -> requests.Session:
    session = requests.Session()
    session.headers.update(PROXY)
    if token:
        session.headers["Authorization"] = f"Token {token}"
    return session


def token_for(stack, username: str, password: str = PASSWORD) -> str:
    response = api().post(f"{stack.url('platform')}/api/auth/token/",
                          json={"username": username, "password": password}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["token"]


def admin_session(stack, email: str) -> requests.Session:
    made = stack.manage("createsuperuser", "--noinput", "--username", email, "--email", email,
                        env={"DJANGO_SUPERUSER_PASSWORD": PASSWORD})
    assert made.returncode == 0 or "already taken" in made.stderr, made.stderr
    return api(token_for(stack, email))


def upload_films(stack, admin: requests.Session, slug: str, seeds: Sequence[int]) -> int:
    """Upload one synthetic film per seed; the batch id (the ingest worker takes it)."""
    files = [("files", (f"film{s}.png", io.BytesIO(cv2.imencode(".png", film(
        s, lesion=s % 3 != 2))[1].tobytes()), "image/png")) for s in seeds]
    r = admin.post(f"{stack.url('platform')}/api/projects/{slug}/uploads/", files=files,
                   timeout=120)
    assert r.status_code == 202, r.text
    return r.json()["id"]


def project_create(stack, admin: requests.Session, slug: str, **fields: Any) -> None:
    r = admin.post(f"{stack.url('platform')}/api/projects/", json={
        "name": slug, "slug": slug, "readers_per_image": 2,
        "class_names": ["Nodule/Mass", "Pleural effusion"], **fields}, timeout=30)
    assert r.status_code == 201, r.text


def images_of(stack, slug: str) -> int:
    return scalar(stack, "SELECT count(*) FROM annotations_image i JOIN annotations_project p "
                  "ON p.id = i.project_id WHERE p.slug = %s", slug)


@dataclass
class Reader:
    """A radiologist: the platform token, and a Label Studio session opened through the
    platform's sign-in link to their own workspace of one project."""

    code: str
    platform: requests.Session
    ls: dict[str, requests.Session] = field(default_factory=dict)


def reader_create(stack, admin: requests.Session, code: str) -> Reader:
    email = f"{code.lower()}@example.org"
    r = admin.post(f"{stack.url('platform')}/api/readers/", json={
        "email": email, "code": code, "password": PASSWORD}, timeout=30)
    assert r.status_code == 201, r.text
    return Reader(code, api(token_for(stack, email)))


def reader_sign_in(stack, reader: Reader, slug: str) -> requests.Session:
    if slug in reader.ls:
        return reader.ls[slug]
    base = stack.url("platform")
    mine = [w for w in reader.platform.get(f"{base}/api/me/workspaces/", timeout=30).json()
            if w["project"] == slug and w["kind"] == "reading"]
    assert mine, f"{reader.code} has no workspace in {slug}"
    link = reader.platform.get(base + mine[0]["url"], allow_redirects=False, timeout=30)
    assert link.status_code == 302, link.text
    session = requests.Session()
    assert session.get(link.headers["Location"], allow_redirects=False,
                       timeout=30).status_code == 302
    reader.ls[slug] = session
    return session


def ls_project_of(stack, code: str, slug: str) -> int:
    return scalar(stack, "SELECT w.ls_project_id FROM annotations_workspace w "
                  "JOIN annotations_reader r ON r.id = w.reader_id JOIN annotations_project p "
                  "ON p.id = w.project_id WHERE r.code = %s AND p.slug = %s AND w.kind = "
                  "'reading'", code, slug)


def open_tasks(stack, reader: Reader, slug: str) -> list[dict[str, Any]]:
    """The reader's tasks in their workspace that have no annotation yet."""
    session = reader_sign_in(stack, reader, slug)
    project = ls_project_of(stack, reader.code, slug)
    tasks = session.get(f"{stack.url('label-studio')}/api/tasks/?project={project}"
                        "&page_size=1000", timeout=30).json()
    tasks = tasks.get("tasks", tasks) if isinstance(tasks, dict) else tasks
    return [t for t in tasks if not t.get("total_annotations")]


def image_sizes(stack, tasks: Sequence[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    """Each task's image size, read before a fault that takes the platform's database
    away (``annotate`` then needs no query)."""
    return {t["data"]["image_id"]: query(stack, "SELECT width, height FROM annotations_image "
                                         "WHERE pseudo_id = %s", t["data"]["image_id"])[0]
            for t in tasks}


def annotate(stack, reader: Reader, slug: str, task: dict[str, Any], shift: int = 0,
             size: tuple[int, int] | None = None) -> requests.Response:
    """One read in Label Studio: the film's lesion, shifted by ``shift`` pixels (``size``:
    the image's, when the platform's database must not be asked)."""
    size = size or query(stack, "SELECT width, height FROM annotations_image "
                         "WHERE pseudo_id = %s", task["data"]["image_id"])[0]
    result = build_result([(TRUTH + shift).tolist()], ["Pleural effusion"],
                          original_width=size[0], original_height=size[1])
    return reader_sign_in(stack, reader, slug).post(
        f"{stack.url('label-studio')}/api/tasks/{task['id']}/annotations/",
        json={"result": result}, timeout=30)


def ls_reads(stack, slug: str) -> set[int]:
    """Ids of the annotations Label Studio holds in the project's reading workspaces."""
    projects = [r[0] for r in query(
        stack, "SELECT w.ls_project_id FROM annotations_workspace w JOIN annotations_project p "
        "ON p.id = w.project_id WHERE p.slug = %s AND w.kind = 'reading'", slug)]
    return {r[0] for r in query(
        stack, "SELECT a.id FROM task_completion a JOIN task t ON t.id = a.task_id "
        "WHERE t.project_id = ANY(%s)", projects, service="label-studio")}


def platform_reads(stack, slug: str) -> set[int]:
    """Label Studio annotation ids behind the platform's current reads of the project."""
    return {int(r[0]) for r in query(
        stack, "SELECT a.external_id FROM annotations_readerannotation a JOIN annotations_image i"
        " ON i.id = a.image_id JOIN annotations_project p ON p.id = i.project_id WHERE p.slug = "
        "%s AND a.is_current AND a.source = 'label_studio'", slug)}


def run_states(stack, table: str, ids: Sequence[int]) -> dict[int, str]:
    return dict(query(stack, f"SELECT id, status FROM {table} WHERE id = ANY(%s)",  # noqa: S608
                      list(ids)))


def in_thread(fn: Callable[[], Any]) -> threading.Thread:
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    return thread


# --- the fault table ------------------------------------------------------------------


@dataclass
class FaultRow:
    fault: str
    runs: str
    final: str
    annotations: str
    recover_s: float


#: Rows appended by the fault tests, printed at the end of the session (tests/conftest.py).
FAULT_TABLE: list[FaultRow] = []


def fault_table() -> str:
    head = ("fault", "runs affected", "final states", "annotations LS / platform",
            "recover (s)")
    rows = [(r.fault, r.runs, r.final, r.annotations, f"{r.recover_s:.1f}") for r in FAULT_TABLE]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    line = "| " + " | ".join(f"{{:{w}}}" for w in widths) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line.format(*head), sep, *(line.format(*r) for r in rows)])
