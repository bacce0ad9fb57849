"""Label Studio webhooks: acknowledge fast, process in a task, lose nothing.

Label Studio sends webhooks inside its own request with a 1 s timeout, so the
receiver only checks the shared secret, stores the raw event (deduplicated by a
digest of the body: a replayed event is stored once) and enqueues processing.
Processing is idempotent: an annotation older than the stored version, or with
identical content, changes nothing.  Missed events are repaired by reconcile.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from annotations.errors import DomainError
from annotations.models import WebhookEvent, WorkspaceTask
from annotations.services.label_studio_sync import ls_annotation_apply, ls_annotation_withdraw

logger = logging.getLogger(__name__)

HANDLED = {"ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED"}


def webhook_receive(*, body: bytes, secret: str | None) -> tuple[WebhookEvent, bool]:
    """Authenticate, store and enqueue; returns ``(event, created)``."""
    expected = settings.LABEL_STUDIO_WEBHOOK_SECRET
    if not secret or not hmac.compare_digest(secret, expected):
        raise DomainError("forbidden", "missing or wrong webhook secret", status=403)
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DomainError("invalid_json", "the webhook body is not JSON") from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("action"), str):
        raise DomainError("invalid_webhook", "the webhook has no action")
    digest = hashlib.sha256(body).hexdigest()
    if isinstance(payload.get("project"), dict):
        # the project block repeats the whole label config in every event: keep its id
        payload["project"] = {"id": payload["project"].get("id")}
    try:
        with transaction.atomic():
            event = WebhookEvent.objects.create(digest=digest, action=payload["action"],
                                                payload=payload)
    except IntegrityError:
        return WebhookEvent.objects.get(digest=digest), False
    from annotations.tasks import webhook_event_process_task

    transaction.on_commit(lambda: webhook_event_process_task.delay(event_id=event.pk))
    return event, True


def _finish(event: WebhookEvent, status: str, reason: str = "") -> WebhookEvent:
    WebhookEvent.objects.filter(pk=event.pk).update(status=status, reason=reason[:2000],
                                                    processed_at=timezone.now())
    event.status, event.reason = status, reason
    return event


def webhook_event_process(*, event_id: int) -> WebhookEvent:
    event = WebhookEvent.objects.get(pk=event_id)
    if event.status != WebhookEvent.Status.PENDING:
        return event
    if event.action not in HANDLED:
        return _finish(event, WebhookEvent.Status.IGNORED, f"action {event.action}")
    try:
        with transaction.atomic():
            outcome = _apply(event.action, event.payload)
            # same transaction: the event is processed exactly when its effects commit
            return _finish(event, WebhookEvent.Status.PROCESSED, outcome)
    except DomainError as exc:
        logger.info("webhook event %s rejected: %s", event.pk, exc.code)
        return _finish(event, WebhookEvent.Status.REJECTED, f"{exc.code}: {exc.message}")


def _task(task_id: Any) -> WorkspaceTask:
    task = WorkspaceTask.objects.select_related(
        "workspace__reader", "workspace__project", "image", "adjudication").filter(
        ls_task_id=int(task_id) if str(task_id).isdigit() else -1).first()
    if task is None:
        raise DomainError("unknown_task", f"Label Studio task {task_id} is not ours")
    return task


def _apply(action: str, payload: dict[str, Any]) -> str:
    if action == "ANNOTATIONS_DELETED":
        done = 0
        for ann in payload.get("annotations") or []:
            if not isinstance(ann, dict) or "task" not in ann:
                raise DomainError("invalid_webhook", "deleted annotation without task")
            done += ls_annotation_withdraw(_task(ann["task"]), int(ann["id"]))
        return f"withdrawn {done}"
    ann = payload.get("annotation")
    if not isinstance(ann, dict) or "id" not in ann:
        raise DomainError("invalid_webhook", "annotation event without annotation")
    task_id = ann.get("task") or (payload.get("task") or {}).get("id")
    task = _task(task_id)
    if payload.get("project", {}).get("id") not in (None, task.workspace.ls_project_id):
        raise DomainError("invalid_webhook", "task and project do not match")
    return ls_annotation_apply(task, ann)


def webhook_events_sweep(*, older_than_seconds: int = 300) -> int:
    """Re-enqueue events still pending after a while (a worker died mid-way)."""
    from annotations.tasks import webhook_event_process_task

    cutoff = timezone.now() - dt.timedelta(seconds=older_than_seconds)
    ids = list(WebhookEvent.objects.filter(status=WebhookEvent.Status.PENDING,
                                           received_at__lt=cutoff).values_list("id", flat=True))
    for event_id in ids:
        webhook_event_process_task.delay(event_id=event_id)
    return len(ids)
