"""Accounts under attack: password guessing, stolen old tokens, weak passwords, and
project settings changed around the validating service."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from annotations.models import AuditEvent, Project, Reader
from annotations.services import readers

pytestmark = pytest.mark.django_db

PASSWORD = "reader-pass-123"


@pytest.fixture
def reader(db):
    return readers.reader_create(email="r1@example.org", code="R1", password=PASSWORD)


def _token(client: APIClient, password: str = PASSWORD, **extra):
    return client.post("/api/auth/token/", {"username": "r1@example.org",
                                            "password": password}, format="json", **extra)


# --- throttled sign-in --------------------------------------------------------------


def test_login_is_throttled_after_repeated_failures(reader, settings):
    settings.LOGIN_MAX_FAILURES = 3
    client = Client()
    for _ in range(3):
        res = client.post("/login/", {"username": "r1@example.org", "password": "guess-again"})
        assert res.status_code == 200 and b"correct" in res.content
    # locked: even the right password is refused, and the page says why
    res = client.post("/login/", {"username": "r1@example.org", "password": PASSWORD})
    assert res.status_code == 429
    assert b"too many failed sign-ins" in res.content
    assert "_auth_user_id" not in client.session
    # another client address is not locked out by this one's failures
    other = Client(REMOTE_ADDR="10.0.0.9")
    assert other.post("/login/", {"username": "r1@example.org",
                                  "password": PASSWORD}).status_code == 302


def test_token_endpoint_is_throttled_after_repeated_failures(reader, settings):
    settings.LOGIN_MAX_FAILURES = 3
    client = APIClient()
    for _ in range(3):
        res = _token(client, "guess-again")
        assert res.status_code == 400
        assert res.json()["error"]["code"] == "invalid_credentials"
    res = _token(client)
    assert res.status_code == 429
    assert res.json()["error"]["code"] == "throttled"
    assert int(res["Retry-After"]) == settings.LOGIN_WINDOW_SECONDS
    assert "token" not in res.json()
    assert not Token.objects.exists()


def test_admin_site_login_is_throttled_after_repeated_failures(admin_user, settings):
    settings.LOGIN_MAX_FAILURES = 2
    client = Client()
    form = {"username": admin_user.username, "password": "guess-again", "next": "/admin/"}
    for _ in range(2):
        assert client.post("/admin/login/", form).status_code == 200
    res = client.post("/admin/login/", {**form, "password": "admin-pass-123"})
    assert b"too many failed sign-ins" in res.content
    assert "_auth_user_id" not in client.session
    # the admin keeps its staff-only rule
    settings.LOGIN_MAX_FAILURES = 5
    reader = readers.reader_create(email="r5@example.org", code="R5", password=PASSWORD)
    res = Client().post("/admin/login/", {"username": reader.user.username,
                                          "password": PASSWORD, "next": "/admin/"})
    assert res.status_code == 200 and b"staff account" in res.content


def test_password_spray_from_one_address_is_throttled(reader, settings):
    """Many usernames, one guess each: the per-address limit stops it."""
    settings.LOGIN_MAX_FAILURES_PER_IP = 4
    client = APIClient()
    for i in range(4):
        res = client.post("/api/auth/token/", {"username": f"user{i}@example.org",
                                               "password": "Winter2024!"}, format="json")
        assert res.status_code == 400
    assert _token(client).status_code == 429


def test_successful_sign_in_clears_the_failures(reader, settings):
    settings.LOGIN_MAX_FAILURES = 3
    client = APIClient()
    for _ in range(2):
        assert _token(client, "guess-again").status_code == 400
    assert _token(client).status_code == 200
    for _ in range(2):
        assert _token(client, "guess-again").status_code == 400
    assert _token(client).status_code == 200


# --- expiring tokens ------------------------------------------------------------------


def test_token_response_says_when_it_expires(reader, settings):
    res = _token(APIClient())
    assert res.status_code == 200
    body = res.json()
    token = Token.objects.get(key=body["token"])
    expires = timezone.datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00"))
    assert abs(expires - (token.created + timedelta(hours=settings.TOKEN_TTL_HOURS))) < timedelta(
        seconds=1)


def test_expired_token_is_refused(reader, settings):
    client = APIClient()
    key = _token(client).json()["token"]
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get("/api/me/").status_code == 200
    Token.objects.filter(key=key).update(
        created=timezone.now() - timedelta(hours=settings.TOKEN_TTL_HOURS, seconds=1))
    res = client.get("/api/me/")
    assert res.status_code == 401
    assert "expired" in res.json()["error"]["message"]
    # signing in again replaces it; the old key stays dead
    fresh = _token(APIClient()).json()["token"]
    assert fresh != key
    assert client.get("/api/me/").status_code == 401
    client.credentials(HTTP_AUTHORIZATION=f"Token {fresh}")
    assert client.get("/api/me/").json()["reader_code"] == "R1"


# --- one password policy --------------------------------------------------------------


@pytest.mark.parametrize("password", ["short-1", "password1234", "12345678901234",
                                      "r9@example.org"])
def test_reader_created_via_api_with_weak_password_is_refused(admin_user, password):
    client = APIClient()
    client.force_authenticate(admin_user)
    res = client.post("/api/readers/", {"email": "r9@example.org", "code": "R9",
                                        "password": password}, format="json")
    assert res.status_code == 400, res.content
    assert res.json()["error"]["code"] == "weak_password"
    assert not Reader.objects.filter(code="R9").exists()
    assert not admin_user.__class__.objects.filter(username="r9@example.org").exists()


def test_reader_created_in_the_web_app_with_weak_password_is_refused(admin_user):
    client = Client()
    client.force_login(admin_user)
    res = client.post("/readers/", {"email": "r9@example.org", "code": "R9",
                                    "password": "1234567890123"})
    assert res.status_code == 400
    assert b"entirely numeric" in res.content
    assert not Reader.objects.filter(code="R9").exists()


def test_reader_created_by_a_service_call_with_weak_password_is_refused(db):
    from annotations.errors import DomainError

    with pytest.raises(DomainError) as exc:
        readers.reader_create(email="r9@example.org", code="R9", password="password")
    assert exc.value.code == "weak_password"
    assert not Reader.objects.exists()


# --- project settings only through the validating service ---------------------------------


@pytest.mark.parametrize("body", [
    {"consensus_strategy": "no-such-strategy"},
    {"consensus_strategy": "wbf", "consensus_params": {"iou_thr": "high"}},
    {"consensus_params": {"no_such_param": 1}},
    {"readers_per_image": 1},          # fixed once reading starts
    {"slug": "renamed"},
    {"show_prelabels": True, "taxonomy_preset": "nih"},
])
def test_patch_project_with_invalid_strategy_changes_nothing(project, admin_user, body):
    before = Project.objects.values().get(pk=project.pk)
    audits = AuditEvent.objects.count()
    client = APIClient()
    client.force_authenticate(admin_user)
    res = client.patch("/api/projects/test/", body, format="json")
    assert res.status_code == 400, res.content
    assert "error" in res.json()
    assert Project.objects.values().get(pk=project.pk) == before
    assert AuditEvent.objects.count() == audits


def test_patch_project_goes_through_the_service(project, admin_user):
    client = APIClient()
    client.force_authenticate(admin_user)
    res = client.patch("/api/projects/test/", {"consensus_strategy": "majority",
                                               "show_prelabels": True}, format="json")
    assert res.status_code == 200, res.content
    assert res.json()["consensus_strategy"] == "majority" and res.json()["show_prelabels"]
    project.refresh_from_db()
    assert project.consensus_strategy == "majority" and project.show_prelabels
    event = AuditEvent.objects.get(action="project.update")
    assert event.detail == {"fields": ["consensus_strategy", "show_prelabels"]}
    assert client.put("/api/projects/test/", {"name": "x"}, format="json").status_code == 405
