"""The platform's one client for Label Studio (label-studio-sdk 2.1.2 plus a few raw calls).

Why one class: Label Studio is an external system that can be down, slow or restarting,
and the platform must see exactly two outcomes, a result or a ``DomainError``:

* ``label_studio_unavailable`` (``transient=True``, HTTP 503): connection refused or reset,
  timeouts, 5xx/429 after the retries are spent.  Celery tasks retry these later.
* ``label_studio_error`` (HTTP 502, ``detail={"status", "body"}``): Label Studio answered
  and refused (4xx: bad config, unknown task, bad token).  Retrying will not help.

Every request carries ``timeout`` seconds; transient failures are retried ``retries``
times with exponential backoff.  Calls that create something (project, tasks,
annotations, predictions, webhooks) are retried only when the request provably did not
reach Label Studio (connect errors, 502/503/504, 429), so a retry never duplicates rows.
The token is never logged nor shown in ``repr``; error messages carry only method + path.

Where the SDK is awkward we use ``requests``: ``/health`` (no auth), the synchronous JSON
export, single annotations, and the platform's bridge inside Label Studio.

Pure module: no Django.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import requests
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from annotations.errors import DomainError

log = logging.getLogger(__name__)
T = TypeVar("T")
#: Task ids per export request when exporting some tasks (URL length).
EXPORT_IDS_PER_REQUEST = 200

#: Statuses that mean "the request was not processed", safe to retry even for a POST.
_NOT_PROCESSED = frozenset({429, 502, 503, 504})


@dataclass(frozen=True)
class WorkspaceAccounts:
    """What the bridge made for one workspace: its organization, the service user the
    platform acts as (and its legacy token), and the reader's user."""

    organization_id: int
    service_user_id: int
    service_token: str
    reader_user_id: int

    def __repr__(self) -> str:  # keep the token out of logs and tracebacks
        return (f"WorkspaceAccounts(organization_id={self.organization_id}, "
                f"reader_user_id={self.reader_user_id})")


def completed_by_id(annotation: Mapping[str, Any]) -> int | None:
    """The annotator's Label Studio user id, whether ``completed_by`` is an id or an object.

    The API, the webhooks and the JSON export give an int; snapshot exports with full
    serialization give ``{"id", "email", ...}``.
    """
    who = annotation.get("completed_by")
    if isinstance(who, Mapping):
        who = who.get("id")
    return int(who) if who is not None else None


class LabelStudioClient:
    """Typed access to one Label Studio server as one user (the admin, normally)."""

    def __init__(
        self,
        base_url: str,
        token: str,
        timeout: float = 10.0,
        retries: int = 3,
        *,
        backoff: float = 0.25,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self._token = token
        self._sdk_client: LabelStudio | None = None

    @property
    def _sdk(self) -> LabelStudio:
        """The SDK client, built on first use: building it loads the TLS certificate bundle
        (~30 ms of CPU), and many calls (a webhook's re-read) never need it."""
        if self._sdk_client is None:
            self._sdk_client = LabelStudio(base_url=self.base_url, api_key=self._token,
                                           timeout=self.timeout, max_retries=0)
        return self._sdk_client

    def __repr__(self) -> str:
        return f"LabelStudioClient({self.base_url!r})"

    # -- server --------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """``/health`` body; ``label_studio_unavailable`` unless it says UP."""
        body = self._call("GET /health", lambda: self._raw("GET", "/health", auth=False))
        if not isinstance(body, dict) or body.get("status") != "UP":
            raise DomainError("label_studio_unavailable", f"Label Studio health is {body!r}",
                              status=503, transient=True)
        return body

    def current_user(self, token: str | None = None) -> dict[str, Any]:
        """The user a token belongs to (this client's own token by default)."""
        return self._call(
            "GET /api/current-user/whoami",
            lambda: self._raw("GET", "/api/current-user/whoami", token=token or self._token),
        )

    # -- projects ------------------------------------------------------------------------

    def create_project(self, title: str, label_config: str, **options: Any) -> int:
        """Create a project; ``options`` are Label Studio project fields (description, ...)."""
        project = self._call(
            "POST /api/projects",
            lambda: self._sdk.projects.create(title=title, label_config=label_config, **options),
            idempotent=False,
        )
        return int(project.id)

    def update_project(self, project_id: int, **fields: Any) -> None:
        """PATCH project fields (``title``, ``label_config``, ``show_collab_predictions``...)."""
        self._call(f"PATCH /api/projects/{project_id}",
                   lambda: self._sdk.projects.update(id=project_id, **fields))

    def get_project(self, project_id: int) -> dict[str, Any]:
        return self._call(f"GET /api/projects/{project_id}",
                          lambda: self._raw("GET", f"/api/projects/{project_id}/"))

    # -- tasks ---------------------------------------------------------------------------

    def import_tasks(self, project_id: int, tasks: Sequence[Mapping[str, Any]]) -> list[int]:
        """Import task dicts (``{"image": url, ...}``); the new task ids, in input order."""
        response = self._call(
            f"POST /api/projects/{project_id}/import",
            lambda: self._sdk.projects.import_tasks(
                id=project_id, request=[dict(t) for t in tasks], return_task_ids=True
            ),
            idempotent=False,
        )
        return [int(i) for i in (response.task_ids or [])]

    def list_tasks(self, project_id: int) -> list[dict[str, Any]]:
        """Every task of a project (the SDK pages through them)."""
        return self._call(
            f"GET /api/tasks?project={project_id}",
            lambda: [_plain(t) for t in self._sdk.tasks.list(project=project_id)],
        )

    # -- annotations and predictions -----------------------------------------------------

    def list_annotations(self, task_id: int) -> list[dict[str, Any]]:
        """A task's annotations: ``id``, ``result``, ``completed_by`` (int), ``updated_at``..."""
        return self._call(
            f"GET /api/tasks/{task_id}/annotations",
            lambda: [_plain(a) for a in self._sdk.annotations.list(id=task_id)],
        )

    def get_annotation(self, annotation_id: int) -> dict[str, Any] | None:
        """One annotation as Label Studio holds it, or None when this client cannot see it
        (404, or 403 from the bridge: it belongs to another organization)."""
        path = f"/api/annotations/{int(annotation_id)}/"
        try:
            return self._call(f"GET {path}", lambda: self._raw("GET", path))
        except DomainError as exc:
            if exc.code == "label_studio_error" and \
                    (exc.detail or {}).get("status") in (403, 404):
                return None
            raise

    def export_project_annotations(self, project_id: int,
                                   ids: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """All tasks of a project (or the tasks ``ids``) with their annotations.

        Uses ``/api/projects/<id>/export?exportType=JSON``: ``completed_by`` is the user id
        (what the platform maps to readers), ``updated_at`` is per annotation, and unlike
        snapshot exports it leaves no export files behind in Label Studio's data dir.
        ``ids`` go in pieces of ``EXPORT_IDS_PER_REQUEST`` (a URL has a length limit).
        """
        path = f"/api/projects/{project_id}/export"
        params: dict[str, Any] = {"exportType": "JSON", "download_all_tasks": "true"}
        if ids is None:
            return self._call(f"GET {path}", lambda: self._raw("GET", path, params=params))
        out: list[dict[str, Any]] = []
        ids = list(ids)
        for start in range(0, len(ids), EXPORT_IDS_PER_REQUEST):
            part = {**params, "ids[]": [str(i) for i in ids[start:start + EXPORT_IDS_PER_REQUEST]]}
            out += self._call(f"GET {path}", lambda part=part: self._raw("GET", path,
                                                                         params=part))
        return out

    def task_changes(self, project_id: int, since: str | None = None,
                     page_size: int = 1000) -> list[tuple[int, str]]:
        """``(task id, updated_at)`` of every task of a project changed after ``since``
        (Label Studio's own timestamp, ``%Y-%m-%dT%H:%M:%S.%fZ``; None: every task).

        A task's ``updated_at`` moves whenever one of its annotations is created,
        updated or deleted (``tasks.models.Annotation.update_task``), so this is what a
        reconcile pass must look at since its last one.  Data manager filter on
        ``tasks:updated_at``, task fields only, page by page.
        """
        query: dict[str, Any] = {"filters": {"conjunction": "and", "items": []},
                                 "ordering": ["tasks:id"]}
        if since:
            query["filters"]["items"].append({"filter": "filter:tasks:updated_at",
                                              "operator": "greater", "type": "Datetime",
                                              "value": since})
        out: list[tuple[int, str]] = []
        page = 1
        while True:
            params = {"project": str(project_id), "fields": "task_only", "page": str(page),
                      "page_size": str(page_size), "query": json.dumps(query)}
            try:
                body = self._call("GET /api/tasks/",
                                  lambda params=params: self._raw("GET", "/api/tasks/",
                                                                  params=params))
            except DomainError as exc:
                if "404" in exc.message and page > 1:  # past the last page
                    break
                raise
            tasks = body.get("tasks", []) if isinstance(body, dict) else body
            out += [(int(t["id"]), str(t["updated_at"])) for t in tasks]
            if len(tasks) < page_size:
                break
            page += 1
        return out

    def create_annotation(
        self,
        task_id: int,
        result: Sequence[Mapping[str, Any]],
        completed_by: int | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Create an annotation; an admin may attribute it with ``completed_by=<user id>``."""
        extra = dict(fields)
        if completed_by is not None:
            extra["completed_by"] = completed_by
        annotation = self._call(
            f"POST /api/tasks/{task_id}/annotations",
            lambda: self._sdk.annotations.create(id=task_id, result=list(result), **extra),
            idempotent=False,
        )
        return _plain(annotation)

    def update_annotation(self, annotation_id: int, result: Sequence[Mapping[str, Any]]) -> None:
        self._call(f"PATCH /api/annotations/{annotation_id}",
                   lambda: self._sdk.annotations.update(id=annotation_id, result=list(result)))

    def delete_annotation(self, annotation_id: int) -> None:
        """Delete an annotation (admins; readers delete their own in the editor)."""
        path = f"/api/annotations/{annotation_id}/"

        def call() -> None:
            response = requests.delete(f"{self.base_url}{path}",
                                       headers={"Authorization": f"Token {self._token}"},
                                       timeout=self.timeout)
            _raise_for_status(response)

        self._call(f"DELETE {path}", call)

    def create_prediction(
        self,
        task_id: int,
        result: Sequence[Mapping[str, Any]],
        score: float | None,
        model_version: str,
    ) -> int:
        """Attach a model's pre-label to a task; returns the prediction id."""
        prediction = self._call(
            "POST /api/predictions",
            lambda: self._sdk.predictions.create(
                task=task_id, result=list(result), model_version=model_version,
                **({} if score is None else {"score": float(score)}),
            ),
            idempotent=False,
        )
        return int(prediction.id)

    # -- webhooks ------------------------------------------------------------------------

    def create_webhook(
        self,
        project_id: int,
        url: str,
        headers: Mapping[str, str] | None = None,
        actions: Sequence[str] = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED",
                                  "ANNOTATIONS_DELETED"),
    ) -> int:
        """Register a project webhook that sends full payloads for ``actions`` only."""
        hook = self._call(
            "POST /api/webhooks",
            lambda: self._sdk.webhooks.create(
                url=url, project=project_id, send_payload=True, send_for_all_actions=False,
                actions=list(actions), headers=dict(headers or {}), is_active=True,
            ),
            idempotent=False,
        )
        return int(hook.id)

    def list_webhooks(self, project_id: int) -> list[dict[str, Any]]:
        return self._call("GET /api/webhooks",
                          lambda: [_plain(w) for w in self._sdk.webhooks.list(project=project_id)])

    # -- the bridge (organizations per workspace) -------------------------------------

    def provision_workspace(self, key: str, bridge_secret: str) -> WorkspaceAccounts:
        """Create (or return) the organization, service user and reader user for ``key``.

        Calls the platform's bridge inside Label Studio (``label_studio_bridge``), the only
        way to make an organization in the community edition.  Idempotent by ``key``.
        """
        path = "/cxr-bridge/workspaces/"

        def call() -> Any:
            response = requests.post(f"{self.base_url}{path}", json={"key": key},
                                     headers={"X-CXR-Bridge-Secret": bridge_secret},
                                     timeout=self.timeout)
            _raise_for_status(response)
            return response.json()

        body = self._call(f"POST {path}", call)
        return WorkspaceAccounts(organization_id=int(body["organization"]),
                                 service_user_id=int(body["service_user"]),
                                 service_token=str(body["service_token"]),
                                 reader_user_id=int(body["reader_user"]))

    # -- plumbing ------------------------------------------------------------------------

    def _raw(self, method: str, path: str, *, auth: bool = True, token: str | None = None,
             params: Mapping[str, str] | None = None) -> Any:
        headers = {"Authorization": f"Token {token or self._token}"} if auth else {}
        response = requests.request(method, f"{self.base_url}{path}", headers=headers,
                                    params=params, timeout=self.timeout)
        _raise_for_status(response)
        return response.json()

    def _call(self, what: str, fn: Callable[[], T], *, idempotent: bool = True) -> T:
        """Run ``fn`` with retries; map every failure to the two DomainError codes."""
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except DomainError:
                raise
            except Exception as exc:  # noqa: BLE001 - classified below, re-raised as domain
                transient, processed = _classify(exc)
                retry = transient and (idempotent or not processed) and attempt < self.retries
                if not retry:
                    raise _domain_error(what, exc, transient) from exc
                delay = self.backoff * 2**attempt
                log.info("Label Studio %s failed (%s); retry %d in %.2f s",
                         what, type(exc).__name__, attempt + 1, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover


def _classify(exc: Exception) -> tuple[bool, bool]:
    """(transient, maybe processed by the server) for an exception from httpx/requests/SDK."""
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | requests.ConnectTimeout):
        return True, False
    if isinstance(exc, requests.ConnectionError) and _refused(exc):
        return True, False
    if isinstance(exc, httpx.TransportError | requests.ConnectionError | requests.Timeout):
        return True, True
    if isinstance(exc, ApiError):
        status = exc.status_code or 0
        if status in _NOT_PROCESSED:
            return True, False
        return status >= 500, True
    return False, True


def _refused(exc: requests.ConnectionError) -> bool:
    text = str(exc)
    return "NewConnectionError" in text or "Connection refused" in text


def _domain_error(what: str, exc: Exception, transient: bool) -> DomainError:
    if transient:
        return DomainError(
            "label_studio_unavailable",
            f"Label Studio unavailable during {what}: {type(exc).__name__}",
            status=503, transient=True,
        )
    status = getattr(exc, "status_code", None)
    body = getattr(exc, "body", None)
    if status is None:  # SDK validation errors, bad JSON: still "Label Studio said no"
        body = str(exc)[:500]
    return DomainError(
        "label_studio_error",
        f"Label Studio refused {what}" + (f": HTTP {status}" if status else f": {body}"),
        status=502, detail={"status": status, "body": _truncate(body)},
    )


def _raise_for_status(response: requests.Response) -> None:
    """Turn a requests error response into the SDK's ApiError so one classifier sees both."""
    if response.status_code >= 400:
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text[:500]
        raise ApiError(status_code=response.status_code, body=body)


def _plain(model: Any) -> dict[str, Any]:
    """An SDK pydantic model as JSON-compatible dict (the shape webhooks deliver)."""
    if isinstance(model, dict):
        return model
    return model.model_dump(mode="json", by_alias=True)


def _truncate(body: Any) -> Any:
    if isinstance(body, str):
        return body[:500]
    text = repr(body)
    return body if len(text) <= 2000 else text[:2000]
