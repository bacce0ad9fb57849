"""Adjudication: disagreement routes an image to an adjudicator, whose decision
overrides the consensus and survives later consensus runs."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, transaction
from rest_framework.test import APIClient

from annotations.formats import vinbigdata
from annotations.models import Adjudication, ConsensusImage, Image
from annotations.services import readers
from annotations.services.adjudication import adjudications_route, project_adjudicator_add
from annotations.services.annotating import BoxIn, reader_annotation_record
from annotations.services.consensus import (
    consensus_run_create,
    consensus_run_execute,
    consensus_run_replay,
)
from annotations.services.image_state import consensus_is_final as is_final
from tests.conftest import ingest_paths

pytestmark = pytest.mark.django_db
NODULE, EFFUSION = "Nodule/Mass", "Pleural effusion"


@pytest.fixture
def case(project, png_images):
    ingest_paths(project, png_images[:2])
    rs = [readers.reader_create(email=f"r{i}@example.org", code=f"R{i}") for i in (1, 2, 3)]
    readers.assignments_create(project=project)
    judge = readers.reader_create(email="judge@example.org", code="ADJ",
                                  password="judge-pass-1x")
    project_adjudicator_add(project=project, reader=judge)
    agree, disagree = Image.objects.order_by("id")
    for r in rs:
        reader_annotation_record(image=agree, reader=r, boxes=[BoxIn(NODULE, 10, 10, 50, 50)],
                                 trigger_consensus=False)
    for r, box in zip(rs, [(NODULE, 10, 10, 50, 50), (EFFUSION, 100, 100, 200, 200),
                           (NODULE, 150, 20, 190, 60)], strict=True):
        reader_annotation_record(image=disagree, reader=r, boxes=[BoxIn(*box)],
                                 trigger_consensus=False)
    run = consensus_run_execute(run_id=consensus_run_create(
        project=project, strategy="majority", enqueue=False).pk)
    return project, rs, judge, agree, disagree, run


def test_low_agreement_routes_to_adjudication(case):
    project, _, _, agree, disagree, run = case
    rows = {r.image_id: r.agreement for r in ConsensusImage.objects.filter(run=run)}
    assert rows[agree.pk] == 1.0 and rows[disagree.pk] == 0.0
    adj = Adjudication.objects.get()
    assert adj.image == disagree and adj.status == "pending"
    assert is_final(agree) and not is_final(disagree)
    # a second run does not open a second case for the same image
    consensus_run_execute(run_id=consensus_run_create(
        project=project, strategy="majority", enqueue=False).pk)
    assert Adjudication.objects.count() == 1


def test_adjudicator_decision_overrides_consensus(case, admin_user):
    project, rs, judge, agree, disagree, _ = case
    adj = Adjudication.objects.get()
    c = APIClient()
    c.force_authenticate(judge.user)
    detail = c.get(f"/api/adjudications/{adj.pk}/").json()
    assert {r["reader"] for r in detail["reads"]} == {"R1", "R2", "R3"}
    assert detail["consensus"] is not None
    resp = c.post(f"/api/adjudications/{adj.pk}/decision/", {"boxes": [
        {"label": EFFUSION, "x_min": 100, "y_min": 100, "x_max": 200, "y_max": 200}]},
        format="json")
    assert resp.status_code == 200, resp.content
    assert resp.json()["status"] == "done" and resp.json()["adjudicator"] == "ADJ"
    assert is_final(disagree)
    again = c.post(f"/api/adjudications/{adj.pk}/decision/", {"boxes": []}, format="json")
    assert again.status_code == 409

    # a later consensus run does not replace the adjudicated label
    consensus_run_execute(run_id=consensus_run_create(
        project=project, strategy="wbf", enqueue=False).pk)
    admin = APIClient()
    admin.force_authenticate(admin_user)
    out = admin.get("/api/projects/test/exports/vinbigdata/").getvalue().decode()
    by_image = {r.image_id: r.reads[0] for r in vinbigdata.parse_csv(out)}
    final = by_image[disagree.pseudo_id]
    assert final.classes.tolist() == [10] and final.boxes.tolist() == [[100, 100, 200, 200]]
    assert by_image[agree.pseudo_id].classes.tolist() == [8]


def test_only_adjudicators_who_did_not_read_may_decide(case):
    _, (r1, _, _), judge, _, disagree, _ = case
    adj = Adjudication.objects.get()
    c = APIClient()
    c.force_authenticate(r1.user)
    assert c.get(f"/api/adjudications/{adj.pk}/").status_code == 403
    assert c.post(f"/api/adjudications/{adj.pk}/decision/", {"boxes": []},
                  format="json").status_code == 403
    project_adjudicator_add(project=adj.project, reader=r1)
    # an adjudicator of this project who read the image: the case is not even visible
    listed = c.get(f"/api/projects/{adj.project.slug}/adjudications/").json()["results"]
    assert listed == []
    assert c.get(f"/api/adjudications/{adj.pk}/").status_code == 404
    resp = c.post(f"/api/adjudications/{adj.pk}/decision/", {"boxes": []}, format="json")
    assert resp.status_code == 404
    assert Adjudication.objects.get().status == "pending"


def test_adjudicator_of_another_project_sees_no_case(case, admin_user):
    from annotations.services.projects import project_create

    project, _, judge, _, _, _ = case
    adj = Adjudication.objects.get()
    other = project_create(name="Other project", slug="other", actor=admin_user)
    outsider = readers.reader_create(email="out@example.org", code="OUT")
    project_adjudicator_add(project=other, reader=outsider)
    c = APIClient()
    c.force_authenticate(outsider.user)
    assert c.get(f"/api/projects/{project.slug}/adjudications/").json()["results"] == []
    assert c.get(f"/api/adjudications/{adj.pk}/").status_code == 404
    assert c.post(f"/api/adjudications/{adj.pk}/decision/", {"boxes": []},
                  format="json").status_code == 404
    # the service refuses too, whatever the caller
    from annotations.errors import DomainError
    from annotations.services.adjudication import adjudication_decide

    with pytest.raises(DomainError):
        adjudication_decide(adjudication=adj, adjudicator=outsider, boxes=[])
    assert Adjudication.objects.get().status == "pending"
    # the admin adds adjudicators per project through the API
    admin = APIClient()
    admin.force_authenticate(admin_user)
    assert admin.post(f"/api/projects/{project.slug}/adjudicators/", {"code": "OUT"},
                      format="json").json() == ["ADJ", "OUT"]
    assert c.get(f"/api/adjudications/{adj.pk}/").status_code == 200
    assert judge.adjudicates.filter(pk=project.pk).exists()


def test_unknown_label_in_decision_stores_nothing(case):
    _, _, judge, _, _, _ = case
    adj = Adjudication.objects.get()
    c = APIClient()
    c.force_authenticate(judge.user)
    resp = c.post(f"/api/adjudications/{adj.pk}/decision/", {"boxes": [
        {"label": "Dragon", "x_min": 1, "y_min": 1, "x_max": 5, "y_max": 5}]}, format="json")
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "unknown_label"
    assert Adjudication.objects.get().status == "pending"
    assert not judge.annotations.exists()


def test_budget_routes_the_most_uncertain_images_and_never_exceeds_the_week(case):
    """With reader_model and a weekly budget of 1, the one case opened is the image whose
    consensus is least certain; a second run in the same week opens nothing more."""
    project, rs, _judge, agree, disagree, _run = case
    Adjudication.objects.all().delete()
    project.adjudication_budget_per_week = 1
    project.save(update_fields=["adjudication_budget_per_week"])
    run = consensus_run_execute(run_id=consensus_run_create(
        project=project, strategy="reader_model", enqueue=False).pk)
    p_error = {r.image_id: r.meta["p_error"] for r in ConsensusImage.objects.filter(run=run)}
    assert p_error[disagree.pk] > p_error[agree.pk]
    adj = Adjudication.objects.get()
    assert adj.image == disagree and adj.p_error == pytest.approx(p_error[disagree.pk])
    # a reader of that image made adjudicator still cannot reach the case routed by budget
    project_adjudicator_add(project=project, reader=rs[0])
    c = APIClient()
    c.force_authenticate(rs[0].user)
    assert c.get(f"/api/projects/{project.slug}/adjudications/").json()["results"] == []
    assert c.get(f"/api/adjudications/{adj.pk}/").status_code == 404
    consensus_run_execute(run_id=consensus_run_create(
        project=project, strategy="reader_model", enqueue=False).pk)
    assert Adjudication.objects.count() == 1  # budget spent for this week
    # another strategy has no posteriors: the agreement threshold applies again
    consensus_run_execute(run_id=consensus_run_create(
        project=project, strategy="majority", enqueue=False).pk)
    assert Adjudication.objects.count() == 1  # the disputed image already has its case


def test_scoped_reader_model_run_learns_from_every_read_but_stores_its_scope(case):
    """A reads-complete run covers one image; a reader's skill cannot be learnt from it,
    so the fit sees the whole project while only the scoped image is stored, and the
    run replays to the same digest from the versions it recorded."""
    project, _rs, _judge, _agree, disagree, _run = case
    run = consensus_run_execute(run_id=consensus_run_create(
        project=project, strategy="reader_model", images=[disagree], enqueue=False).pk)
    assert list(ConsensusImage.objects.filter(run=run).values_list("image_id", flat=True)) \
        == [disagree.pk]
    assert run.annotations.count() == 6  # both images' reads
    assert consensus_run_replay(run) == run.digest


def test_queue_lists_the_most_likely_wrong_case_first(case):
    project, _rs, _judge, agree, disagree, _run = case
    Adjudication.objects.all().delete()
    low = Adjudication.objects.create(project=project, image=agree, agreement=0.9, p_error=0.8)
    high = Adjudication.objects.create(project=project, image=disagree, agreement=0.0,
                                       p_error=0.1)
    assert list(Adjudication.objects.all()) == [low, high]
    Adjudication.objects.filter(pk=low.pk).update(p_error=None)
    assert list(Adjudication.objects.all()) == [high, low]  # unscored cases after scored


@pytest.mark.django_db(transaction=True)
def test_two_runs_routing_at_once_cannot_overspend_the_budget(case):
    """Run A routes inside its transaction and has not committed; run B routes meanwhile.
    B must wait for A and then see the week's budget spent (without the lock it would
    read no case yet and open a second one for the same image)."""
    project, _rs, _judge, _agree, disagree, _run = case
    run = consensus_run_execute(run_id=consensus_run_create(
        project=project, strategy="reader_model", enqueue=False).pk)
    Adjudication.objects.all().delete()
    project.adjudication_budget_per_week = 1
    project.save(update_fields=["adjudication_budget_per_week"])
    a_routed, release, b_done, b_out = threading.Event(), threading.Event(), \
        threading.Event(), []

    def run_a():
        try:
            with transaction.atomic():
                assert [c.image_id for c in adjudications_route(run=run)] == [disagree.pk]
                a_routed.set()
                release.wait(10)
        finally:
            connection.close()

    def run_b():
        try:
            a_routed.wait(10)
            with transaction.atomic():
                b_out.append(adjudications_route(run=run))
        except Exception as exc:  # noqa: BLE001  (the failure is what the test reports)
            b_out.append(exc)
        finally:
            b_done.set()
            connection.close()

    ta, tb = threading.Thread(target=run_a), threading.Thread(target=run_b)
    ta.start()
    tb.start()
    assert a_routed.wait(10)
    assert not b_done.wait(1.0)  # B waits for A's transaction
    release.set()
    ta.join(10)
    tb.join(10)
    assert b_out == [[]]
    assert Adjudication.objects.filter(status="pending").count() == 1
