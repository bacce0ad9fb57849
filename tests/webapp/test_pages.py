"""The web app's pages and the API they draw from, through Django's test client:
roles on every page, CSRF on every form, blinding in the viewer's data, the
dashboard's figures, and assets served by the platform itself."""

from __future__ import annotations

import re

import pytest
from django.contrib.staticfiles import finders
from django.test import Client

from annotations.models import ConsensusRun, Project
from annotations.services.annotating import BoxIn, reader_annotation_record
from annotations.services.consensus import consensus_run_create, consensus_run_execute
from annotations.services.image_state import image_states
from tests.training.films import CLASS_NAMES
from tests.webapp.world import PASSWORD, build_world

pytestmark = pytest.mark.django_db

ADMIN_PAGES = ["/projects/", "/projects/clinic/", "/projects/clinic/images/",
               "/projects/clinic/models/", "/projects/clinic/active-learning/",
               "/projects/clinic/feedback/"]
SHARED_PAGES = ["/quick-read/"]


@pytest.fixture
def world(tmp_path):
    return build_world(tmp_path)


def login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_anonymous_is_sent_to_login(world):
    client = Client()
    for url in ADMIN_PAGES + SHARED_PAGES + ["/home/", f"/images/{world.images[0].pseudo_id}/"]:
        res = client.get(url)
        assert res.status_code == 302 and res["Location"].startswith("/login/?next="), url
    assert client.get("/").status_code == 302


def test_login_page_signs_in_and_lands_by_role(world, admin_user):
    client = Client()
    page = client.get("/login/")
    assert page.status_code == 200 and b"csrfmiddlewaretoken" in page.content
    res = client.post("/login/", {"username": "r1@example.org", "password": PASSWORD})
    assert res.status_code == 302
    assert client.get("/").headers["Location"] == "/home/"
    admin = Client()
    admin.post("/login/", {"username": admin_user.username, "password": "admin-pass-123"})
    assert admin.get("/").headers["Location"] == "/projects/"
    bad = Client().post("/login/", {"username": "r1@example.org", "password": "wrong"})
    assert bad.status_code == 200 and b"correct" in bad.content  # the form says why


def test_radiologist_gets_403_on_admin_pages(world):
    client = login(world.readers["R1"].user)
    for url in ADMIN_PAGES:
        res = client.get(url)
        assert res.status_code == 403, url
        assert b"Not allowed" in res.content
    for url in SHARED_PAGES + ["/home/"]:
        assert client.get(url).status_code == 200, url


def test_admin_sees_every_page(world, admin_user):
    client = login(admin_user)
    for url in ADMIN_PAGES + SHARED_PAGES + [f"/images/{world.images[0].pseudo_id}/"]:
        res = client.get(url)
        assert res.status_code == 200, url
    assert client.get("/projects/nope/").status_code == 404
    assert client.get("/home/").headers["Location"] == "/projects/"  # no reader code


def test_viewer_page_only_for_assigned_images(world):
    mine = world.reader_of_image(0)
    other = world.not_reading(0)
    assert login(mine.user).get(f"/images/{world.images[0].pseudo_id}/").status_code == 200
    assert login(other.user).get(f"/images/{world.images[0].pseudo_id}/").status_code == 404
    pool = world.images[6].pseudo_id
    assert login(mine.user).get(f"/images/{pool}/").status_code == 404


API_ADMIN_ONLY = ["/api/projects/clinic/dashboard/", "/api/projects/clinic/browse/",
                  "/api/projects/clinic/learning-curve/", "/api/projects/clinic/al-preview/",
                  "/api/projects/clinic/prelabel-runs/"]


def test_new_api_endpoints_are_role_checked(world, admin_user):
    anon, reader, admin = Client(), login(world.readers["R1"].user), login(admin_user)
    for url in API_ADMIN_ONLY:
        assert anon.get(url).status_code in (401, 403), url
        assert reader.get(url).status_code == 403, url
    for url in API_ADMIN_ONLY[:3] + API_ADMIN_ONLY[4:]:
        assert admin.get(url).status_code == 200, url
    # AL preview needs a promoted model: a clear 404, not a crash
    res = admin.get("/api/projects/clinic/al-preview/?strategy=entropy&budget=4")
    assert res.status_code == 404 and "promoted" in res.json()["error"]["message"]
    assert admin.get("/api/projects/clinic/al-preview/?budget=zero").status_code == 400
    assert anon.get("/api/me/agreement/").status_code in (401, 403)
    assert anon.post("/api/projects/clinic/quick-read/").status_code in (401, 403)


def test_forms_need_csrf(world, admin_user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    res = client.post("/projects/", {"name": "No token", "taxonomy_preset": "nih",
                                     "readers_per_image": 3, "consensus_strategy": "wbf"})
    assert res.status_code == 403
    assert not Project.objects.filter(name="No token").exists()
    res = client.post("/projects/clinic/", {"action": "rerun"})
    assert res.status_code == 403
    page = client.get("/projects/")
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page.content).group(1)
    res = client.post("/projects/", {"csrfmiddlewaretoken": token.decode(), "name": "NIH pilot",
                                     "taxonomy_preset": "nih", "readers_per_image": 3,
                                     "consensus_strategy": "majority"})
    assert res.status_code == 302 and res["Location"] == "/projects/nih-pilot/"
    created = Project.objects.get(slug="nih-pilot")
    assert created.consensus_strategy == "majority"
    assert created.label_classes.filter(image_level=False).count() == 8


def test_project_form_errors_keep_existing(world, admin_user):
    client = login(admin_user)
    res = client.post("/projects/", {"name": "Clash", "slug": "clinic", "taxonomy_preset": "nih",
                                     "readers_per_image": 3, "consensus_strategy": "wbf"})
    assert res.status_code == 200 and b"already exists" in res.content
    assert Project.objects.get(slug="clinic").name == "Clinic chest films"
    res = client.post("/projects/", {"name": "Custom", "taxonomy_preset": "nih",
                                     "custom_classes": "Nodule\nEffusion\n",
                                     "readers_per_image": 0, "consensus_strategy": "wbf"})
    assert res.status_code == 200 and not Project.objects.filter(name="Custom").exists()
    res = client.post("/projects/", {"name": "Custom", "taxonomy_preset": "nih",
                                     "custom_classes": "Nodule\nEffusion\n",
                                     "readers_per_image": 2, "consensus_strategy": "wbf",
                                     "clahe": "on"})
    custom = Project.objects.get(name="Custom")
    assert custom.clahe and sorted(custom.label_classes.filter(image_level=False)
                                   .values_list("name", flat=True)) == ["Effusion", "Nodule"]


def test_project_form_takes_image_level_findings(world, admin_user):
    client = login(admin_user)
    page = client.get("/projects/").content.decode()
    assert "6-class findings (5 findings + No finding)" in page and "Image-level findings" in page
    res = client.post("/projects/", {"name": "Findings", "taxonomy_preset": "nih",
                                     "custom_classes": "Nodule\n",
                                     "custom_image_classes": "Pneumonia\nEdema\n",
                                     "readers_per_image": 3, "consensus_strategy": "wbf"})
    assert res.status_code == 302, res.content[:500]
    made = Project.objects.get(name="Findings")
    assert dict(made.label_classes.values_list("name", "image_level")) == {
        "Nodule": False, "Pneumonia": True, "Edema": True, "No finding": True}
    res = client.post("/projects/", {"name": "Only findings", "taxonomy_preset": "nih",
                                     "custom_image_classes": "Edema\nEdema\n",
                                     "readers_per_image": 3, "consensus_strategy": "wbf"})
    assert res.status_code == 200 and b"unique" in res.content
    assert not Project.objects.filter(name="Only findings").exists()


def test_project_form_takes_mask_classes(world, admin_user):
    client = login(admin_user)
    assert "lung fields and the heart" in client.get("/projects/").content.decode()
    res = client.post("/projects/", {"name": "Anatomy", "taxonomy_preset": "vindr_cxr",
                                     "anatomy_masks": "on",
                                     "custom_mask_classes": "Pneumothorax\n",
                                     "readers_per_image": 3, "consensus_strategy": "wbf"})
    assert res.status_code == 302, res.content[:500]
    made = Project.objects.get(name="Anatomy")
    assert list(made.mask_classes.values_list("name", "anatomy")) == [
        ("Right lung", True), ("Left lung", True), ("Heart", True), ("Pneumothorax", False)]
    res = client.post("/projects/", {"name": "Bad masks", "taxonomy_preset": "vindr_cxr",
                                     "custom_mask_classes": "No finding\n",
                                     "readers_per_image": 3, "consensus_strategy": "wbf"})
    assert res.status_code == 200 and b"cannot be a mask class" in res.content
    assert not Project.objects.filter(name="Bad masks").exists()


def test_strategy_change_and_rerun(world, admin_user, django_capture_on_commit_callbacks):
    client = login(admin_user)
    res = client.post("/projects/clinic/", {"action": "strategy",
                                            "consensus_strategy": "majority",
                                            "params": '{"quorum": 0.5}'})
    assert res.status_code == 302
    world.project.refresh_from_db()
    assert world.project.consensus_strategy == "majority"
    assert world.project.consensus_params == {"quorum": 0.5}
    for bad in ('[1, 2]', '{"quorum": "lots"}', "not json"):
        res = client.post("/projects/clinic/", {"action": "strategy",
                                                "consensus_strategy": "wbf", "params": bad})
        assert res.status_code == 400, bad
        world.project.refresh_from_db()
        assert world.project.consensus_strategy == "majority", bad  # nothing changed
    before = ConsensusRun.objects.count()
    with django_capture_on_commit_callbacks(execute=True):
        res = client.post("/projects/clinic/", {"action": "rerun"})
    assert res.status_code == 302
    run = ConsensusRun.objects.order_by("-id").first()
    assert ConsensusRun.objects.count() == before + 1
    assert run.strategy == "majority" and run.status == "done"  # eager here
    assert client.post("/projects/clinic/", {"action": "drop"}).status_code == 400


def test_image_states(world):
    states = image_states(world.project)
    got = [states[i.pk] for i in world.images]
    assert got == ["final"] * 4 + ["reading"] + ["unassigned"] * 3

    def read_then_merge(index: int, position: int, box: tuple) -> list[str]:
        """The state after a (new) read of image ``index``, then after a consensus run."""
        image = world.images[index]
        reader_annotation_record(image=image, reader=world.reader_of_image(index, position),
                                 trigger_consensus=False, boxes=[BoxIn("Pleural effusion", *box)])
        seen = [image_states(world.project)[image.pk]]
        consensus_run_execute(run_id=consensus_run_create(
            project=world.project, strategy="wbf", enqueue=False).pk)
        return seen + [image_states(world.project)[image.pk]]

    # the second read of image 4 arrives: read, then final after a consensus run
    assert read_then_merge(4, 1, (50, 40, 86, 76)) == ["read", "final"]
    # a reader revises a final image: not final again until a run merges the new version
    assert read_then_merge(0, 0, (51, 41, 87, 77)) == ["read", "final"]


def test_dashboard_api_figures(world, admin_user):
    d = login(admin_user).get("/api/projects/clinic/dashboard/").json()
    assert d["counts"] == {"imported": 8, "quarantined": 0, "duplicates": 0, "assigned": 5,
                           "read": 4, "consensus_done": 4, "waiting_adjudication": 0,
                           "gold": 2}
    progress = {r["reader"]: (r["completed"], r["assigned"]) for r in d["readers"]}
    assert sum(a for _, a in progress.values()) == 10
    assert sum(c for c, _ in progress.values()) == 9
    assert d["consensus"]["latest_done_run"] == ConsensusRun.objects.get().pk


def test_browse_filters(world, admin_user):
    client = login(admin_user)

    def ids(query=""):
        body = client.get(f"/api/projects/clinic/browse/?{query}").json()
        return [r["id"] for r in body["results"]], body

    all_ids, body = ids()
    assert body["total"] == 8 and all(r["thumbnail"].startswith("/files/images/")
                                      for r in body["results"])
    assert set(ids("state=final")[0]) == {i.pseudo_id for i in world.images[:4]}
    assert ids("state=reading")[0] == [world.images[4].pseudo_id]
    assert set(ids("gold=true")[0]) == {world.images[2].pseudo_id, world.images[3].pseudo_id}
    no_finding = set(ids("label=No finding")[0])
    assert no_finding == {world.images[3].pseudo_id}
    assert world.images[0].pseudo_id in ids("label=Pleural effusion")[0]
    assert ids("limit=3&offset=6")[0] == all_ids[6:8]  # paging (URLs carry their expiry)
    low = ids("agreement_max=0.99")[0]
    assert all(i in all_ids for i in low)
    assert client.get("/api/projects/clinic/browse/?state=lost").status_code == 400
    assert client.get("/api/projects/clinic/browse/?agreement_max=high").status_code == 400


def test_browse_by_predicted_finding_probability(world, admin_user):
    from annotations.models import ModelVersion, Prediction

    ModelVersion.objects.create(project=world.project, name="clinic-det", sha256="0" * 64,
                                config="", promoted=True)
    for image, p in zip(world.images[:3], (0.9, 0.4, 0.7), strict=True):
        Prediction.objects.create(image=image, model_version="clinic-det", boxes=[],
                                  image_scores={"classifier": "clinic-cls",
                                                "probs": {"Pleural effusion": p}})
    client = login(admin_user)

    def found(query):
        body = client.get(f"/api/projects/clinic/browse/?{query}").json()
        return {r["id"]: r["finding_p"] for r in body["results"]}

    assert found("finding=Pleural effusion") == {world.images[0].pseudo_id: 0.9,
                                                 world.images[2].pseudo_id: 0.7}
    assert set(found("finding=Pleural effusion&finding_min=0.3")) == {
        i.pseudo_id for i in world.images[:3]}
    assert found("finding=Nodule/Mass") == {}  # nothing predicted for it
    assert client.get("/api/projects/clinic/browse/?finding=Pleural effusion"
                      "&finding_min=lots").status_code == 400
    # the viewer's model layer carries the same probabilities, for its findings table
    layers = client.get(f"/api/images/{world.images[0].pseudo_id}/layers/").json()["layers"]
    model = next(layer for layer in layers if layer["kind"] == "model")
    assert model["findings"]["classifier"] == "clinic-cls"
    assert model["findings"]["probabilities"] == [{"label": "Pleural effusion", "p": 0.9}]


def test_viewer_layers_blinding(world, admin_user):
    final_image, reading_image = world.images[0], world.images[4]
    first = world.reader_of_image(4, 0)  # read image 4; its consensus is not final
    d = login(first.user).get(f"/api/images/{reading_image.pseudo_id}/layers/").json()
    assert d["blinded"] is True and d["state"] == "not final"
    assert [(layer["kind"], layer["name"]) for layer in d["layers"]] == [("reader", first.code)]
    assert d["agreement"] is None and d["pairs"] == []
    # the reader of image 4 who has not read yet sees no one's boxes at all
    second = world.reader_of_image(4, 1)
    d = login(second.user).get(f"/api/images/{reading_image.pseudo_id}/layers/").json()
    assert d["layers"] == []
    # a final image: both readers and the consensus
    reader = world.reader_of_image(0)
    d = login(reader.user).get(f"/api/images/{final_image.pseudo_id}/layers/").json()
    kinds = sorted((layer["kind"], layer["name"]) for layer in d["layers"])
    assert d["blinded"] is False
    assert [(p["a"], p["b"]) for p in d["pairs"]] == [tuple(world.reading[0])]
    assert d["pairs"][0]["f1"] == 1.0  # the two boxes overlap far above IoU 0.4
    assert kinds == sorted([("reader", c) for c in world.reading[0]] + [("consensus",
                                                                        "Consensus")])
    # not assigned: not found, whatever the state
    assert login(world.not_reading(0).user).get(
        f"/api/images/{final_image.pseudo_id}/layers/").status_code == 404
    # the admin sees everything on the image still being read, the consensus of the
    # reads so far marked provisional
    d = login(admin_user).get(f"/api/images/{reading_image.pseudo_id}/layers/").json()
    assert [layer["kind"] for layer in d["layers"]] == ["reader", "consensus"]
    assert d["layers"][1]["provisional"] is True and d["blinded"] is False


def test_my_agreement_only_on_final_images(world):
    reader = world.reader_of_image(4, 0)
    rows = login(reader.user).get("/api/me/agreement/").json()
    mine = next(r for r in rows if r["project"] == "clinic")
    finals = sum(1 for i in range(4) if reader.code in world.reading[i])
    assert mine["final_images"] == finals
    assert mine["assigned"] == finals + 1  # image 4 is assigned but not final
    if finals:
        overall = mine["overall"]
        assert overall["n_images"] == finals
        assert 0.0 <= overall["sensitivity"] <= 1.0
    page = login(reader.user).get("/home/").content.decode()
    assert f"{finals} of {finals + 1} of my images final" in page


def test_my_reliability_shows_only_my_own_estimates_over_final_images(world, admin_user):
    reader = world.reader_of_image(4, 0)  # read image 4, which is not final
    resp = login(reader.user).get("/api/me/reliability/")
    assert resp.status_code == 200
    mine = next(r for r in resp.json() if r["project"] == "clinic")
    finals = sum(1 for i in range(4) if reader.code in world.reading[i])
    assert finals, "the world gives this reader a final image"
    # the estimate rests on final images only: image 4's read is not in it
    assert mine["final_images"] == finals == mine["overall"]["n_images"]
    overall = mine["overall"]
    assert 0.0 <= overall["sensitivity_ci"][0] <= overall["sensitivity"] \
        <= overall["sensitivity_ci"][1] <= 1.0
    assert overall["fp_per_image_ci"][0] <= overall["fp_per_image"] <= \
        overall["fp_per_image_ci"][1]
    assert {c["class_name"] for c in mine["per_class"]} <= set(CLASS_NAMES)
    # nothing names or describes another reader
    text = resp.content.decode()
    for code in world.readers:
        assert f'"{code}"' not in text
    assert set(mine) == {"project", "project_name", "final_images", "overall", "per_class",
                         "image_labels"}
    page = login(reader.user).get("/home/").content.decode()
    assert 'class="reliability" data-project="clinic"' in page
    # an admin without a reader code has no reliability of their own
    assert login(admin_user).get("/api/me/reliability/").json() == []


def _reread(world, index: int, boxes: list) -> None:
    """Every reader of image ``index`` reads it again with ``boxes``; consensus follows."""
    image = world.images[index]
    for code in world.reading[index]:
        reader_annotation_record(image=image, reader=world.readers[code], boxes=boxes,
                                 trigger_consensus=False, image_labels=[])
    consensus_run_execute(run_id=consensus_run_create(project=world.project, strategy="wbf",
                                                      enqueue=False).pk)
    assert image_states(world.project, [image.pk])[image.pk] == "final"


def test_my_reliability_does_not_move_when_an_image_i_never_saw_is_reread(world):
    me = world.reader_of_image(4, 0)
    not_mine = [i for i in range(4) if me.code not in world.reading[i]]
    mine_final = [i for i in range(4) if me.code in world.reading[i]]
    assert not_mine and mine_final, "the world gives this reader both kinds of final image"
    client = login(me.user)

    def figures():
        return next(r for r in client.get("/api/me/reliability/").json()
                    if r["project"] == "clinic")

    before = figures()
    # my own image 4 is still being read: its second reader's read must not move me
    image4 = world.images[4]
    second = world.reader_of_image(4, 1)
    reader_annotation_record(image=image4, reader=second, trigger_consensus=False,
                             boxes=[BoxIn(CLASS_NAMES[0], 10, 10, 60, 60)], image_labels=[])
    assert image_states(world.project, [image4.pk])[image4.pk] != "final"
    assert figures() == before
    many = [BoxIn(CLASS_NAMES[k % len(CLASS_NAMES)], 4 + 9 * k, 8, 20 + 9 * k, 30)
            for k in range(8)]
    _reread(world, not_mine[0], many)  # stays final, outside my assignment
    assert figures() == before
    # the same change on an image I read does move my figures: the check above can fail
    _reread(world, mine_final[0], many)
    assert figures() != before


def test_assets_are_local_and_present(world, admin_user):
    assert finders.find("vendor/chart.js/chart.umd.min.js"), \
        "chart.js missing: run scripts/install_web_assets"
    client = login(admin_user)
    pages = ADMIN_PAGES + SHARED_PAGES + [f"/images/{world.images[0].pseudo_id}/", "/login/"]
    for url in pages:
        html = (Client() if url == "/login/" else client).get(url).content.decode()
        refs = re.findall(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', html)
        assert refs, url
        for ref in refs:
            assert not re.match(r"^(https?:)?//", ref), f"{url} loads {ref} from the internet"
            if ref.startswith("/static/"):
                assert finders.find(ref[len("/static/"):]), f"{url}: {ref} not found"


def test_home_lists_open_reads(world):
    waiting = world.reader_of_image(4, 1)  # has not read image 4 yet
    html = login(waiting.user).get("/home/").content.decode()
    assert f'href="/images/{world.images[4].pseudo_id}/"' in html  # in the queue
    done = world.reader_of_image(4, 0)
    html = login(done.user).get("/home/").content.decode()
    assert f'href="/images/{world.images[4].pseudo_id}/"' not in html


def test_al_preview_follows_stored_scores(world, admin_user, settings, tmp_path):
    from annotations.models import ModelVersion, Prediction
    from annotations.services.model_registry import version_promote

    settings.MODEL_DIR = tmp_path / "models"
    settings.MODEL_DIR.mkdir()
    version = ModelVersion.objects.create(project=world.project, name="clinic-v1", sha256="0",
                                          config="", metrics={"map_40": 0.5})
    version_promote(version=version)
    pool = world.images[5:]
    for image, entropy in zip(pool[:2], (0.2, 0.9), strict=True):  # the third: not scored
        Prediction.objects.create(image=image, model_version="clinic-v1", boxes=[],
                                  uncertainty={"entropy_max": entropy,
                                               "least_confidence_max": entropy / 2})
    client = login(admin_user)
    d = client.get("/api/projects/clinic/al-preview/?strategy=entropy&budget=1").json()
    assert (d["pool"], d["scored"], d["unscored"]) == (3, 2, 1)
    assert [s["id"] for s in d["selected"]] == [pool[1].pseudo_id]
    assert d["selected"][0]["scores"]["entropy_max"] == 0.9
    d = client.get("/api/projects/clinic/al-preview/?strategy=diversity&budget=2").json()
    assert d["selected"] == [] and d["missing_scores"] == ["features"]
    res = client.get("/api/projects/clinic/al-preview/?strategy=oracle&budget=2")
    assert res.status_code == 400 and "oracle" in res.json()["error"]["message"]
    curve = client.get("/api/projects/clinic/learning-curve/").json()
    assert curve["versions"][0]["map_40"] == 0.5 and curve["rounds"] == []


def test_reader_accounts_from_the_projects_page(world, admin_user):
    from annotations.models import Reader

    client = login(admin_user)
    res = client.post("/readers/", {"email": "r9@example.org", "code": "R9",
                                    "password": "a-long-password"})
    assert res.status_code == 302
    assert Reader.objects.get(code="R9").user.check_password("a-long-password")
    page = client.get("/projects/").content.decode()
    assert "r9@example.org" in page
    for bad in ({"email": "r10@example.org", "code": "R9"},          # code taken
                {"email": "r9@example.org", "code": "R10"},          # email taken
                {"email": "r11@example.org", "code": "9 lives"},     # not a code
                {"email": "r12@example.org", "code": "R12", "password": "short"}):
        res = client.post("/readers/", bad)
        assert res.status_code == 400, bad
    assert Reader.objects.count() == 4
    radiologist = login(world.readers["R1"].user)
    assert radiologist.post("/readers/", {"email": "x@example.org",
                                          "code": "X1"}).status_code == 403
    assert client.get("/readers/").status_code == 405
