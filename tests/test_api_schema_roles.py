"""Schemathesis over the OpenAPI schema, once per role: zero 5xx, and no 2xx where the
role may not go.

The schema is generated in-process by drf-spectacular (the one ``/api/schema/`` serves)
and every operation in it is fuzzed through the Django WSGI application, with no network,
as each of: anonymous, radiologist (R1), other radiologist (R2), adjudicator (ADJ) and
admin.  Roles authenticate with their own DRF tokens (``Authorization: Token ...``);
anonymous requests carry only what schemathesis itself generates.

Each operation gets a bounded number of positive and negative examples per role
(``EXAMPLES`` each, derandomized so that a run is reproducible; operations with nothing
schemathesis can make invalid get positive ones only).  Each path parameter is, in about
half of the examples, replaced by an object that exists in the world (the projects, real
images, the adjudication case, the ingest batch, predictions...), so the permission and
scoping checks meet real objects, not only 404s.

Checks:

* no response with status >= 500, for any role (the failures are listed: method, path,
  status, the start of the body and, for an unhandled exception, its last line);
* no 2xx on an operation outside the role's row of ``ALLOWED`` (written from the views'
  ``permission_classes`` and ``annotations.api.permissions``; everything not listed is
  admin-only, as TRUST.md's default deny says), and for radiologists and adjudicators
  no 2xx on an object outside their scope (an image not assigned to them, a project
  they have no assignment in, another reader's prediction, a case on an image they read).

Exclusions, none silent:

* ``POST /api/projects/{slug}/label-studio/push/`` is not fuzzed *as admin*: it needs a
  running Label Studio (without one it answers 503 ``label_studio_unavailable`` by
  design).  Every other role still hits it and must be refused.
* Nothing else is excluded.  Operations that start background work (consensus runs,
  training runs, ingest of uploads) enqueue it with ``transaction.on_commit``; the test's
  transaction never commits, so that work is recorded but never starts.  Reconcile runs
  for real (the world has no Label Studio workspaces, so it calls nothing outside).

Each request runs in its own savepoint, rolled back after a 5xx, so that one failing
request does not poison the next ones.  A per-role summary (operations, requests,
status classes, the operations that answered 2xx) is printed; nothing is asserted about
it.  The 500s the fuzzing found are pinned by ``test_fuzz_findings_are_client_errors``.
"""

from __future__ import annotations

import json
import logging
import traceback
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import got_request_exception, request_finished, request_started
from django.db import close_old_connections, transaction
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from rest_framework.test import APIClient
from schemathesis import GenerationMode

from annotations.formats import registry
from annotations.models import Adjudication, Assignment, Image, Prediction
from annotations.services import accounts, readers
from annotations.services.adjudication import project_adjudicator_add
from annotations.services.annotating import BoxIn, reader_annotation_record
from annotations.services.consensus import consensus_run_create, consensus_run_execute
from annotations.services.projects import project_create
from tests.conftest import ingest_paths

pytestmark = pytest.mark.django_db

#: Examples per operation, per generation mode (positive and negative), per role.
EXAMPLES = 10
ROLES = ["anonymous", "radiologist", "other_radiologist", "adjudicator", "admin"]
READERS = {"radiologist", "other_radiologist", "adjudicator"}
AUTHENTICATED = READERS | {"admin"}
NODULE, EFFUSION = "Nodule/Mass", "Pleural effusion"

#: Who may use what, from the views' permission classes.  Not listed: admins only
#: (IsPlatformAdmin).  The webhook is nobody's: only Label Studio, holding the
#: workspace's secret, may get a 2xx there.
ALLOWED: dict[str, set[str]] = {
    "POST /api/auth/token/": set(ROLES),  # AllowAny (wrong credentials: 400/429)
    "POST /api/label-studio/webhook/{workspace_id}/": set(),
    # IsAuthenticated
    "GET /api/me/": AUTHENTICATED,
    "GET /api/me/assignments/": AUTHENTICATED,
    "GET /api/me/workspaces/": AUTHENTICATED,
    "GET /api/me/workspaces/{workspace_id}/open/": AUTHENTICATED,
    "GET /api/me/agreement/": AUTHENTICATED,
    "GET /api/me/reliability/": AUTHENTICATED,
    # ReadOnlyForRadiologists (reads only)
    "GET /api/projects/": AUTHENTICATED,
    "GET /api/projects/{slug}/": AUTHENTICATED,
    "GET /api/projects/{slug}/images/": AUTHENTICATED,
    "GET /api/images/{image_id}/": AUTHENTICATED,
    # IsAdminOrRadiologist
    "GET /api/images/{image_id}/layers/": AUTHENTICATED,
    "GET /api/images/{image_id}/heatmap/": AUTHENTICATED,
    "POST /api/predictions/{id}/rating/": AUTHENTICATED,
    "POST /api/projects/{slug}/quick-read/": AUTHENTICATED,
    # IsAdminOrAdjudicator
    "GET /api/projects/{slug}/adjudications/": {"adjudicator", "admin"},
    "GET /api/adjudications/{id}/": {"adjudicator", "admin"},
    "POST /api/adjudications/{id}/decision/": {"adjudicator", "admin"},
}
#: Not fuzzed for these roles, with the reason (see the module docstring).
EXCLUDED = {("admin", "POST /api/projects/{slug}/label-studio/push/"):
            "needs a running Label Studio (503 label_studio_unavailable without one)"}


def allowed_roles(key: str) -> set[str]:
    return ALLOWED.get(key, {"admin"})


@dataclass
class Tally:
    operations: set[str] = field(default_factory=set)
    requests: int = 0
    classes: Counter = field(default_factory=Counter)
    ok: set[str] = field(default_factory=set)  # operations that answered 2xx at least once


@pytest.fixture
def world(project, admin_user, png_images):
    """Four images, R1 and R2 reading two each (disjoint), a helper reader R3 who also
    read R1's first image so that a disagreement opens an adjudication case, ADJ
    adjudicating the project (reads nothing), predictions on R1's and R2's images,
    and a second project nobody reads."""
    batch = ingest_paths(project, png_images)
    r1 = readers.reader_create(email="r1@example.org", code="R1", password="reader-pass-1")
    r2 = readers.reader_create(email="r2@example.org", code="R2", password="reader-pass-2")
    project.readers_per_image = 1
    project.save()
    readers.assignments_create(project=project)
    images = list(Image.objects.filter(project=project).order_by("id"))
    assert len(images) == 4
    mine = {a.image.pseudo_id for a in r1.assignments.select_related("image")}
    theirs = {a.image.pseudo_id for a in r2.assignments.select_related("image")}
    assert mine and theirs and not mine & theirs
    r3 = readers.reader_create(email="r3@example.org", code="R3")
    case_image = Image.objects.get(pseudo_id=sorted(mine)[0])
    Assignment.objects.create(image=case_image, reader=r3)
    for reader, box in ((r1, (NODULE, 10, 10, 50, 50)), (r3, (EFFUSION, 100, 100, 200, 200))):
        reader_annotation_record(image=case_image, reader=reader, boxes=[BoxIn(*box)],
                                 trigger_consensus=False)
    run = consensus_run_execute(run_id=consensus_run_create(
        project=project, strategy="majority", enqueue=False).pk)
    adj_reader = readers.reader_create(email="adj@example.org", code="ADJ",
                                       password="judge-pass-1x")
    project_adjudicator_add(project=project, reader=adj_reader)
    case = Adjudication.objects.get()
    predictions = {}
    for code, ids in (("R1", mine), ("R2", theirs)):
        image = Image.objects.get(pseudo_id=sorted(ids)[-1])
        predictions[code] = Prediction.objects.create(
            image=image, model_version="fuzz-v1", score=0.9,
            boxes=[{"label": NODULE, "box": [10, 10, 50, 50], "score": 0.9}])
    project_create(name="Other project", slug="other", actor=admin_user)
    users = {"anonymous": None, "radiologist": r1.user, "other_radiologist": r2.user,
             "adjudicator": adj_reader.user, "admin": admin_user}
    return {
        "users": users,
        "tokens": {role: accounts.token_issue(u)[0].key for role, u in users.items() if u},
        # what each reader may see (for the object-scope check)
        "images": {"radiologist": mine, "other_radiologist": theirs, "adjudicator": set()},
        "predictions": {"radiologist": {predictions["R1"].pk},
                        "other_radiologist": {predictions["R2"].pk}, "adjudicator": set()},
        "cases": {"radiologist": set(), "other_radiologist": set(),
                  "adjudicator": {case.pk}},
        "projects": {"radiologist": {"test"}, "other_radiologist": {"test"},
                     "adjudicator": set()},
        # real values to put in path parameters
        "path_values": {
            "slug": ["test", "other"],
            "image_id": sorted(i.pseudo_id for i in images),
            "fmt": sorted(registry.EXPORTERS) or ["coco"],
            "/api/adjudications/": [case.pk],
            "/api/consensus-runs/": [run.pk],
            "/api/ingest-batches/": [batch.pk],
            "/api/predictions/": sorted(p.pk for p in predictions.values()),
        },
    }


#: Operations on one object, where a reader's 2xx must be on an object in their scope
#: (lists answer with what the reader may see, possibly nothing: a 2xx there is fine).
SCOPED = {"GET /api/projects/{slug}/", "GET /api/projects/{slug}/images/",
          "POST /api/projects/{slug}/quick-read/", "GET /api/images/{image_id}/",
          "GET /api/images/{image_id}/layers/", "GET /api/images/{image_id}/heatmap/",
          "POST /api/predictions/{id}/rating/",
          "GET /api/adjudications/{id}/", "POST /api/adjudications/{id}/decision/"}


def out_of_scope(world, role: str, key: str, params: dict[str, Any]) -> str | None:
    """Why a 2xx for this reader on these objects would break blinding, or None."""
    if role not in READERS or key not in SCOPED:
        return None
    path = key.split(" ", 1)[1]
    slug, image_id, pk = params.get("slug"), params.get("image_id"), params.get("id")
    if "{slug}" in path and str(slug) not in world["projects"][role]:
        return f"project {slug!r} has no assignment of theirs"
    if "{image_id}" in path and str(image_id) not in world["images"][role]:
        return f"image {image_id!r} is not assigned to them"
    if path.startswith("/api/predictions/") and _int(pk) not in world["predictions"][role]:
        return f"prediction {pk!r} is not on their images"
    if path.startswith("/api/adjudications/") and _int(pk) not in world["cases"][role]:
        return f"case {pk!r} is not theirs to adjudicate"
    return None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _real_values(world, path: str, name: str) -> list[Any]:
    values = world["path_values"]
    if name in values:
        return values[name]
    if name == "id":
        for prefix, pks in values.items():
            if prefix.startswith("/") and path.startswith(prefix):
                return pks
    return []


@pytest.fixture
def wsgi_app():
    """The Django WSGI application, each request in a savepoint of the test's transaction
    (rolled back after a 5xx); connections are not closed between requests (as Django's
    own test client does), and unhandled exceptions are kept for the report."""
    handler = WSGIHandler()
    errors: list[str] = []

    def keep_exception(sender, request=None, **kwargs):
        errors.append(traceback.format_exc().strip().splitlines()[-1][:300])

    def app(environ, start_response):
        sid = transaction.savepoint()
        seen: dict[str, int] = {}

        def capture(status, headers, exc_info=None):
            seen["status"] = int(status.split()[0])
            return start_response(status, headers, exc_info)

        try:
            result = handler(environ, capture)
            try:
                body = b"".join(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        except BaseException:
            transaction.savepoint_rollback(sid)
            raise
        if seen.get("status", 500) >= 500:
            transaction.savepoint_rollback(sid)
        else:
            transaction.savepoint_commit(sid)
        return [body]

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    got_request_exception.connect(keep_exception)
    try:
        yield app, errors
    finally:
        got_request_exception.disconnect(keep_exception)
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.mark.slow
def test_schemathesis_every_role(world, wsgi_app):
    logging.disable(logging.WARNING)  # thousands of 4xx and refused webhooks; errors stay
    try:
        _every_role(world, *wsgi_app)
    finally:
        logging.disable(logging.NOTSET)


def _every_role(world, app, server_errors):
    raw = SchemaGenerator().get_schema(request=None, public=True)
    schema = schemathesis.openapi.from_dict(raw, config=schemathesis.Config())
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) >= 40, "the schema lost its operations"
    unknown = set(ALLOWED) - {f"{op.method.upper()} {op.path}" for op in operations}
    assert not unknown, f"ALLOWED names operations the schema does not have: {unknown}"

    five_xx: list[str] = []
    forbidden_2xx: list[str] = []
    transport: list[str] = []
    tallies = {role: Tally() for role in ROLES}
    positive_only: set[str] = set()  # operations with nothing schemathesis can make invalid

    for role in ROLES:  # admin last: its writes (new readers, adjudicators) come after
        token = world["tokens"].get(role)
        tally = tallies[role]
        for op in operations:
            key = f"{op.method.upper()} {op.path}"
            if (role, key) in EXCLUDED:
                continue
            tally.operations.add(key)
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                if mode is GenerationMode.NEGATIVE and (key in positive_only
                                                        or not negatable(op)):
                    positive_only.add(key)
                    continue
                try:
                    _fuzz(world, app, server_errors, op, key, mode, role, token, tally,
                          five_xx, forbidden_2xx, transport)
                except Unsatisfiable:  # negatable() said yes, schemathesis found nothing
                    positive_only.add(key)

    print("\nschemathesis per role (operations, requests, status classes):")
    for role in ROLES:
        t = tallies[role]
        classes = " ".join(f"{c}={t.classes[c]}" for c in ("2xx", "3xx", "4xx", "5xx"))
        print(f"  {role:18} operations={len(t.operations):3} requests={t.requests:5} {classes}")
        print(f"    2xx on: {', '.join(sorted(t.ok)) or '-'}")
    print(f"  positive examples only (nothing to make invalid): {len(positive_only)} operations")
    for (role, key), why in EXCLUDED.items():
        print(f"  excluded for {role}: {key} ({why})")
    if transport:
        print(f"  requests the test client could not send: {len(transport)}")
        for line in transport[:10]:
            print("   ", line)
    problems = []
    if five_xx:
        problems.append(f"{len(five_xx)} responses >= 500:\n  " + "\n  ".join(five_xx[:40]))
    if forbidden_2xx:
        problems.append(f"{len(forbidden_2xx)} 2xx where the role may not go:\n  "
                        + "\n  ".join(forbidden_2xx[:40]))
    assert not problems, "\n".join(problems)


def negatable(op) -> bool:
    """Whether schemathesis can make any part of this operation's request invalid.

    Mirrors the location choice of its negative mode (a free-form string path part, for
    example, has no invalid value), so that the test does not spend hundreds of rejected
    draws per role finding out.  Uses the pinned release's internals; should they move,
    every operation is tried and an ``Unsatisfiable`` says the same, only slower.
    """
    try:
        from schemathesis.core.parameters import ParameterLocation
        from schemathesis.specs.openapi._hypothesis import (
            can_negate_headers,
            can_negate_path_parameters,
        )
    except ImportError:
        return True
    for location in (ParameterLocation.PATH, ParameterLocation.HEADER,
                     ParameterLocation.COOKIE, ParameterLocation.QUERY):
        if not op.get_parameter_set(location).schema["properties"]:
            continue
        if location == ParameterLocation.PATH and not can_negate_path_parameters(op):
            continue
        if location.is_in_header and not can_negate_headers(op, location):
            continue
        return True
    return bool(op.body) and any(item.is_negatable for item in op.body.items)


def _fuzz(world, app, server_errors, op, key, mode, role, token, tally,
          five_xx, forbidden_2xx, transport):
    strategy = op.as_strategy(generation_mode=mode)
    names = [p.name for p in op.path_parameters]
    real = {n: _real_values(world, op.path, n) for n in names}

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=strategy, data=st.data())
    def run(case, data):
        if names:
            params = dict(case.path_parameters or {})
            for name in names:
                if real[name] and data.draw(st.booleans(), label=f"real {name}"):
                    params[name] = data.draw(st.sampled_from(real[name]), label=name)
            case.path_parameters = params
        headers = {"Authorization": f"Token {token}"} if token else None
        del server_errors[:]
        try:
            response = case.call(app=app, headers=headers)
        except Exception as exc:  # the client refused to build the request
            transport.append(f"{role} {key}: {type(exc).__name__}: {str(exc)[:120]}")
            return
        tally.requests += 1
        status = response.status_code
        tally.classes[f"{status // 100}xx"] += 1
        where = f"{role:17} {op.method.upper()} {case.formatted_path}"
        if status >= 500:
            body = response.content[:160].decode("utf-8", "replace")
            cause = f" [{server_errors[-1]}]" if server_errors else ""
            five_xx.append(f"{where} -> {status} {body!r}{cause}")
        elif 200 <= status < 300:
            tally.ok.add(key)
            if role not in allowed_roles(key):
                forbidden_2xx.append(f"{where} -> {status} (not allowed for {role})")
            else:
                why = out_of_scope(world, role, key, case.path_parameters or {})
                if why:
                    forbidden_2xx.append(f"{where} -> {status} ({why})")

    run()


# What the fuzzing found (each was a 500), pinned here so that it stays fixed.
REGRESSIONS = [
    ("get", "/api/projects/test/exports/coco/?run=abc", None, 400),
    ("get", "/api/projects/test/mask-exports/coco/?run=abc", None, 400),
    ("get", "/api/projects/test/agreement/?run=1.5", None, 400),
    ("post", "/api/projects/test/training-runs/", True, 400),
    ("post", "/api/projects/test/training-runs/", {"params": 5}, 400),
    ("post", "/api/ml/training-requests/", [1], 400),
    ("post", "/api/projects/", {"name": "Punctuation", "class_names": ["a b", "a_b"]}, 400),
    ("post", "/api/projects/", {"name": "Symbols", "class_names": ["?"]}, 400),
    ("get", "/api/projects/?limit=" + "9" * 30, None, 200),
]


@pytest.mark.parametrize("method,url,body,expected", REGRESSIONS)
def test_fuzz_findings_are_client_errors(project, admin_user, method, url, body, expected):
    client = APIClient()
    client.force_authenticate(admin_user)
    if body is None:
        resp = getattr(client, method)(url)
    else:
        resp = getattr(client, method)(url, json.dumps(body), content_type="application/json")
    assert resp.status_code == expected, resp.content[:300]
    if expected == 400:
        assert resp.json()["error"]["code"]
