"""Label Studio webhooks: acknowledge fast, re-read before storing, lose nothing.

Label Studio sends webhooks inside its own request with a 1 s timeout, so the receiver
only authenticates the event (each workspace has its own URL and secret, see
``label_studio_sync.webhook_secret``), stores it (deduplicated by a digest of the body: an
identical replay is stored once) and enqueues processing.  Events refused at the door are
kept too, without their body, with the reason.

A webhook is a hint, never a fact: its secret is readable by the workspace's reader (Label
Studio shows webhook headers to organization members), so processing re-reads the
annotation from Label Studio with the workspace's service credentials and stores what Label
Studio holds.  An event whose payload disagrees with Label Studio (another task, another
``completed_by``, other content: a forgery or a stale replay) is rejected with its reason
and changes nothing.  Missed events are repaired by reconcile.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
from collections.abc import Mapping
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from annotations import events
from annotations.errors import DomainError
from annotations.label_studio.client import completed_by_id
from annotations.models import ReaderAnnotation, WebhookEvent, Workspace, WorkspaceTask
from annotations.services.label_studio_sync import (
    ls_annotation_apply,
    ls_annotation_withdraw,
    ls_result_signature,
    webhook_secret,
    ws_client,
)

logger = logging.getLogger(__name__)

HANDLED = {"ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED"}
#: Label Studio's payload repeats the whole task and project; far below this in practice.
MAX_BODY_BYTES = 2 * 1024 * 1024
#: Refused events are kept for the admin, but an anonymous flood must not fill the table.
MAX_REFUSED_PER_HOUR = 1000
#: Sweeps that may re-queue one pending event before it is rejected as poison.
MAX_EVENT_ATTEMPTS = 5


def _store(*, digest: str, action: str, payload: dict[str, Any], workspace: Workspace | None,
           status: str = WebhookEvent.Status.PENDING, reason: str = ""
           ) -> tuple[WebhookEvent, bool]:
    try:
        with transaction.atomic():
            event = WebhookEvent.objects.create(
                digest=digest, action=action[:64], payload=payload, workspace=workspace,
                status=status, reason=reason[:2000],
                processed_at=timezone.now() if status != WebhookEvent.Status.PENDING else None)
    except IntegrityError:
        return WebhookEvent.objects.get(digest=digest), False
    return event, True


def webhook_refused(*, workspace_id: int, body: bytes, secret: str | None) -> bool:
    """True (after keeping a bodiless record of the attempt) when the secret is not the
    workspace's.  Checked before anything else, so a refused body never deduplicates
    against a genuine event."""
    ws = Workspace.objects.filter(pk=workspace_id).first()
    if ws is not None and secret and hmac.compare_digest(secret, webhook_secret(ws)):
        return False
    digest = hashlib.sha256(b"refused\x00" + body[:MAX_BODY_BYTES]).hexdigest()
    recent = WebhookEvent.objects.filter(
        action="(refused)", received_at__gte=timezone.now() - dt.timedelta(hours=1))
    if recent.count() >= MAX_REFUSED_PER_HOUR:  # a flood: counted in the log, not stored
        logger.warning("webhook refused (not stored: %d refusals this hour)",
                       MAX_REFUSED_PER_HOUR)
        return True
    _store(digest=digest, action="(refused)", payload={}, workspace=None,
           status=WebhookEvent.Status.REJECTED,
           reason=f"forbidden: missing or wrong secret for workspace {workspace_id}")
    logger.warning("webhook refused: wrong secret for workspace %s", workspace_id)
    return True


def webhook_receive(*, workspace_id: int, body: bytes, secret: str | None
                    ) -> tuple[WebhookEvent, bool]:
    """Authenticate, store and enqueue; returns ``(event, created)``.

    The caller has checked ``webhook_refused`` first (and answered 403 if so); a wrong
    secret here still raises ``forbidden``.
    """
    if len(body) > MAX_BODY_BYTES:
        raise DomainError("payload_too_large", "the webhook body is too large", status=413)
    digest = hashlib.sha256(body).hexdigest()
    ws = Workspace.objects.filter(pk=workspace_id).first()
    if ws is None or not secret or not hmac.compare_digest(secret, webhook_secret(ws)):
        raise DomainError("forbidden", "missing or wrong webhook secret", status=403)
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DomainError("invalid_json", "the webhook body is not JSON") from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("action"), str):
        raise DomainError("invalid_webhook", "the webhook has no action")
    if isinstance(payload.get("project"), dict):
        # the project block repeats the whole label config in every event: keep its id
        payload["project"] = {"id": payload["project"].get("id")}
    event, created = _store(digest=digest, action=payload["action"], payload=payload,
                            workspace=ws)
    if created:
        events.emit(events.WebhookStored(event_id=event.pk))
    return event, created


def _finish(event: WebhookEvent, status: str, reason: str = "") -> WebhookEvent:
    WebhookEvent.objects.filter(pk=event.pk).update(status=status, reason=reason[:2000],
                                                    processed_at=timezone.now())
    event.status, event.reason = status, reason
    return event


def webhook_event_process(*, event_id: int) -> WebhookEvent:
    event = WebhookEvent.objects.select_related("workspace").get(pk=event_id)
    if event.status != WebhookEvent.Status.PENDING:
        return event
    if event.action not in HANDLED:
        return _finish(event, WebhookEvent.Status.IGNORED, f"action {event.action}")
    if event.workspace is None:
        return _finish(event, WebhookEvent.Status.REJECTED, "no workspace")
    try:
        with transaction.atomic():
            outcome = _apply(event.workspace, event.action, event.payload)
            # same transaction: the event is processed exactly when its effects commit
            return _finish(event, WebhookEvent.Status.PROCESSED, outcome)
    except DomainError as exc:
        if exc.transient:  # Label Studio down: left pending, the sweep re-queues it
            logger.info("webhook event %s deferred: %s", event.pk, exc.code)
            return event
        logger.info("webhook event %s rejected: %s", event.pk, exc.code)
        return _finish(event, WebhookEvent.Status.REJECTED, f"{exc.code}: {exc.message}")


def _task(ws: Workspace, task_id: Any) -> WorkspaceTask:
    """The workspace's own task ``task_id``; anything else is refused."""
    number = int(task_id) if str(task_id).isdigit() else -1
    task = WorkspaceTask.objects.select_related(
        "workspace__reader", "workspace__project", "image", "adjudication").filter(
        workspace=ws, ls_task_id=number).first()
    if task is None:
        raise DomainError("forged_webhook", f"task {task_id} is not in this workspace")
    return task


def _deleted_task(ws: Workspace, ann: Mapping[str, Any]) -> WorkspaceTask | None:
    """The task of a deleted annotation: Label Studio sends only its id, so the platform's
    own record of that annotation (in this workspace) names the image."""
    if "task" in ann:
        return _task(ws, ann["task"])
    read = ReaderAnnotation.objects.filter(
        reader=ws.reader, image__project=ws.project, external_id=str(ann["id"]),
        source=ReaderAnnotation.Source.LABEL_STUDIO).order_by("-version").first()
    return None if read is None else ws.tasks.select_related(
        "workspace__reader", "workspace__project", "image", "adjudication").filter(
        image=read.image).first()


def _apply(ws: Workspace, action: str, payload: dict[str, Any]) -> str:
    client = ws_client(ws)
    if action == "ANNOTATIONS_DELETED":
        done = 0
        for ann in payload.get("annotations") or []:
            if not isinstance(ann, dict) or not str(ann.get("id", "")).isdigit():
                raise DomainError("invalid_webhook", "deleted annotation without id")
            task = _deleted_task(ws, ann)
            if task is None:
                continue  # never stored (e.g. a violation): nothing to withdraw
            if client.get_annotation(int(ann["id"])) is not None:
                raise DomainError("forged_webhook",
                                  f"annotation {ann['id']} still exists in Label Studio")
            done += ls_annotation_withdraw(task, int(ann["id"]))
        return f"withdrawn {done}"
    claimed = payload.get("annotation")
    if not isinstance(claimed, dict) or not str(claimed.get("id", "")).isdigit():
        raise DomainError("invalid_webhook", "annotation event without annotation id")
    held = client.get_annotation(int(claimed["id"]))
    if held is None:
        raise DomainError("forged_webhook",
                          f"Label Studio has no annotation {claimed['id']} in this workspace")
    task = _task(ws, held.get("task"))
    _check_agrees(claimed, payload, held, task)
    return ls_annotation_apply(task, held)


def _check_agrees(claimed: Mapping[str, Any], payload: Mapping[str, Any],
                  held: Mapping[str, Any], task: WorkspaceTask) -> None:
    """Refuse an event whose payload is not what Label Studio holds (forged or stale)."""
    claimed_task = claimed.get("task") or (payload.get("task") or {}).get("id")
    if str(claimed_task) != str(held.get("task")):
        raise DomainError("forged_webhook", "the payload names another task than Label Studio")
    if completed_by_id(claimed) != completed_by_id(held):
        raise DomainError("forged_webhook",
                          "the payload names another annotator than Label Studio")
    try:
        same = ls_result_signature(claimed, task.image) == \
            ls_result_signature(held, task.image) and \
            bool(claimed.get("was_cancelled")) == bool(held.get("was_cancelled"))
    except DomainError:
        same = False
    if not same:
        raise DomainError("stale_webhook",
                          "the payload's content is not what Label Studio holds now")


def webhook_events_sweep(*, older_than_seconds: int = 300,
                         max_attempts: int = MAX_EVENT_ATTEMPTS) -> int:
    """Re-enqueue events still pending after a while (a worker died mid-way, Label Studio
    was down); an event re-queued ``max_attempts`` times is rejected with that reason
    (a poison event must not be retried forever).  Returns how many were re-queued."""
    cutoff = timezone.now() - dt.timedelta(seconds=older_than_seconds)
    stale = WebhookEvent.objects.filter(status=WebhookEvent.Status.PENDING,
                                        received_at__lt=cutoff)
    poison = stale.filter(attempts__gte=max_attempts)
    poisoned = poison.update(status=WebhookEvent.Status.REJECTED, processed_at=timezone.now(),
                             reason=f"poison: still failing after {max_attempts} attempts")
    if poisoned:
        logger.warning("webhook sweep: %d events rejected after %d attempts", poisoned,
                       max_attempts)
    ids = list(stale.filter(attempts__lt=max_attempts).values_list("id", flat=True))
    WebhookEvent.objects.filter(pk__in=ids).update(attempts=F("attempts") + 1)
    for event_id in ids:
        events.emit(events.WebhookStored(event_id=event_id, retry=True))
    return len(ids)
