"""Label Studio as the reading front-end; the platform as the source of truth.

* ``reader_provision``: a Label Studio account per reader (its legacy token is
  what the platform acts with; it never leaves the database).
* ``workspace_ensure``: one Label Studio project per (platform project, reader):
  the community edition shows every annotation of a task to everyone in the
  project, so blinding needs one project per reader.  Each gets the labeling
  config generated from the taxonomy and a webhook back to the platform.
* ``assignments_push``: assigned images become tasks in their reader's
  workspace, with a signed image URL and the pseudonymous image id only.
* ``ls_annotation_apply``: THE place a Label Studio annotation becomes a reader
  annotation (used by webhooks and by reconcile).  An annotation made by anyone
  but the workspace's reader is a protocol violation: recorded, excluded.
* ``workspace_reconcile``: pulls a workspace's annotations and repairs what
  webhooks missed (creates, updates, deletions).  Running it twice changes nothing.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import logging
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils.dateparse import parse_datetime

from annotations.errors import DomainError
from annotations.label_studio.client import LabelStudioClient, completed_by_id
from annotations.label_studio.config import label_config, validate_label_config
from annotations.label_studio.regions import build_result, parse_result
from annotations.models import (
    Adjudication,
    Assignment,
    Image,
    LabelClass,
    LabelStudioAccount,
    Project,
    ProtocolViolation,
    Reader,
    ReaderAnnotation,
    Workspace,
    WorkspaceTask,
)
from annotations.services.adjudication import adjudication_decide
from annotations.services.annotating import BoxIn, reader_annotation_record
from annotations.services.audit import audit_record
from annotations.services.exports import project_taxonomy
from annotations.services.feedback import feedback_record
from annotations.services.signing import signed_image_url

logger = logging.getLogger(__name__)


def ls_client() -> LabelStudioClient:
    if not settings.LABEL_STUDIO_TOKEN:
        raise DomainError("label_studio_unavailable", "CXR_LABEL_STUDIO_TOKEN is not set",
                          status=503)
    return LabelStudioClient(settings.LABEL_STUDIO_URL, settings.LABEL_STUDIO_TOKEN,
                             timeout=settings.LABEL_STUDIO_TIMEOUT)


def webhook_url() -> str:
    return settings.PLATFORM_URL_FOR_LABEL_STUDIO.rstrip("/") + "/api/label-studio/webhook/"


# --- accounts and workspaces -------------------------------------------------------


def ls_password(email: str) -> str:
    """The Label Studio password of a reader account, derived, never stored.

    Derived from the secret key so that provisioning can be repeated (signup of an
    existing email logs in with the same password) after a failure half-way.  The
    reader is handed it once to log into Label Studio.
    """
    mac = hmac.new(settings.SECRET_KEY.encode(), f"ls-password\x00{email}".encode(),
                   hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:18]).decode()


def reader_provision(reader: Reader, client: LabelStudioClient | None = None
                     ) -> LabelStudioAccount:
    existing = LabelStudioAccount.objects.filter(reader=reader).first()
    if existing is not None:
        return existing
    client = client or ls_client()
    email = reader.user.email or f"{reader.code.lower()}@readers.invalid"
    user = client.signup_user(email, ls_password(email))
    account = LabelStudioAccount.objects.create(reader=reader, ls_user_id=user.user_id,
                                                token=user.token)
    audit_record(action="label_studio.reader_provision", target=reader,
                 detail={"code": reader.code})
    return account


def workspace_ensure(project: Project, reader: Reader, kind: str = Workspace.Kind.READING,
                     client: LabelStudioClient | None = None) -> Workspace:
    ws = Workspace.objects.filter(project=project, reader=reader, kind=kind).first()
    if ws is not None:
        return ws
    client = client or ls_client()
    reader_provision(reader, client)
    taxonomy = project_taxonomy(project)
    config = label_config(taxonomy)
    validate_label_config(config, taxonomy)
    suffix = "adjudication" if kind == Workspace.Kind.ADJUDICATION else "reading"
    ls_id = client.create_project(f"{project.name} · {reader.code} · {suffix}", config)
    client.create_webhook(ls_id, webhook_url(),
                          headers={settings.LABEL_STUDIO_WEBHOOK_HEADER:
                                   settings.LABEL_STUDIO_WEBHOOK_SECRET})
    ws = Workspace.objects.create(project=project, reader=reader, kind=kind, ls_project_id=ls_id)
    audit_record(action="label_studio.workspace_create", project=project, target=ws,
                 detail={"reader": reader.code, "kind": kind})
    return ws


def _task_data(image: Image) -> dict[str, Any]:
    return {"image": signed_image_url(image.pseudo_id, "display",
                                      ttl=settings.LABEL_STUDIO_IMAGE_URL_TTL),
            "image_id": image.pseudo_id}


def assignments_push(project: Project, client: LabelStudioClient | None = None) -> int:
    """Put every assigned image without a task into its reader's workspace."""
    client = client or ls_client()
    pushed = 0
    by_reader: dict[int, list[Assignment]] = {}
    placed = set(WorkspaceTask.objects.filter(
        workspace__project=project, workspace__kind=Workspace.Kind.READING,
    ).values_list("workspace__reader_id", "image_id"))
    for a in Assignment.objects.filter(image__project=project).select_related("image", "reader"):
        if (a.reader_id, a.image_id) not in placed:
            by_reader.setdefault(a.reader_id, []).append(a)
    for assignments in by_reader.values():
        ws = workspace_ensure(project, assignments[0].reader, client=client)
        ids = client.import_tasks(ws.ls_project_id, [_task_data(a.image) for a in assignments])
        WorkspaceTask.objects.bulk_create(
            WorkspaceTask(workspace=ws, image=a.image, ls_task_id=tid)
            for a, tid in zip(assignments, ids, strict=True))
        if project.show_prelabels:
            _push_prelabels(ws, assignments, ids, client)
        pushed += len(ids)
    audit_record(action="label_studio.assignments_push", project=project,
                 detail={"tasks": pushed})
    return pushed


def _push_prelabels(ws: Workspace, assignments: list[Assignment], task_ids: list[int],
                    client: LabelStudioClient) -> None:
    """Model pre-labels, only when the project's switch is on (they bias a read)."""
    from annotations.services.prelabels import prelabel_for  # noqa: PLC0415

    for a, tid in zip(assignments, task_ids, strict=True):
        pred = prelabel_for(a.image)
        if pred is not None:
            client.create_prediction(tid, pred["result"], pred["score"], pred["model_version"])
            WorkspaceTask.objects.filter(ls_task_id=tid).update(prediction=pred["prediction"])


# --- applying Label Studio annotations ----------------------------------------------


def _updated_at(annotation: Mapping[str, Any]) -> dt.datetime | None:
    raw = annotation.get("updated_at") or annotation.get("created_at")
    return parse_datetime(raw) if isinstance(raw, str) else None


def _to_boxes(annotation: Mapping[str, Any], image: Image) -> tuple[list[BoxIn], list[str]]:
    names = dict(LabelClass.objects.filter(project_id=image.project_id)
                 .values_list("name", "image_level"))
    parsed = parse_result(
        annotation.get("result") or [],
        box_classes=[n for n, lvl in names.items() if not lvl],
        image_classes=[n for n, lvl in names.items() if lvl],
    )
    # Readers see the display derivative: the region's pixel size is the display
    # size.  Percent coordinates are scale-free, so rescale to original pixels.
    sx = image.width / parsed.original_width if parsed.original_width else 1.0
    sy = image.height / parsed.original_height if parsed.original_height else 1.0
    boxes = [BoxIn(label, b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy)
             for label, b in zip(parsed.labels, parsed.boxes.tolist(), strict=True)]
    return boxes, sorted(parsed.image_labels)


def ls_annotation_apply(task: WorkspaceTask, annotation: Mapping[str, Any]) -> str:
    """Record one Label Studio annotation of ``task``; returns what happened.

    ``created`` / ``unchanged`` / ``violation`` / ``adjudicated``.  Raises
    DomainError for content the platform cannot accept (nothing is stored).
    """
    ws = task.workspace
    user_id = completed_by_id(annotation)
    account = LabelStudioAccount.objects.filter(ls_user_id=user_id).select_related(
        "reader").first() if user_id is not None else None
    ann_id = int(annotation["id"])
    if account is None or account.reader_id != ws.reader_id:
        _, created = ProtocolViolation.objects.get_or_create(
            ls_annotation_id=ann_id,
            defaults={"workspace": ws, "image": task.image, "ls_user_id": user_id,
                      "actual_reader": account.reader if account else None,
                      "detail": {"result": annotation.get("result")}},
        )
        if created:
            logger.warning("protocol violation: annotation %s in workspace %s by LS user %s",
                           ann_id, ws.pk, user_id)
            audit_record(action="label_studio.protocol_violation", project=ws.project,
                         target=ws, detail={"ls_annotation": ann_id, "ls_user": user_id})
        return "violation"
    boxes, labels = _to_boxes(annotation, task.image)
    if ws.kind == Workspace.Kind.ADJUDICATION:
        adj = task.adjudication
        if adj is None or adj.status != Adjudication.Status.PENDING:
            return "unchanged"
        adjudication_decide(adjudication=adj, adjudicator=ws.reader, boxes=boxes,
                            image_labels=labels)
        return "adjudicated"
    recorded, created = reader_annotation_record(
        image=task.image, reader=ws.reader, boxes=boxes, image_labels=labels,
        source=ReaderAnnotation.Source.LABEL_STUDIO, external_id=str(ann_id),
        external_updated_at=_updated_at(annotation),
        was_cancelled=bool(annotation.get("was_cancelled")),
    )
    if created and task.prediction_id is not None:
        feedback_record(recorded)
    return "created" if created else "unchanged"


def ls_annotation_withdraw(task: WorkspaceTask, ls_annotation_id: int) -> bool:
    """The reader's Label Studio annotation was deleted: their read no longer counts."""
    current = ReaderAnnotation.objects.filter(
        image=task.image, reader=task.workspace.reader, is_current=True,
        source=ReaderAnnotation.Source.LABEL_STUDIO, external_id=str(ls_annotation_id),
    ).first()
    if current is None:
        return False
    with transaction.atomic():
        ReaderAnnotation.objects.filter(pk=current.pk).update(is_current=False)
        Assignment.objects.filter(image=task.image, reader=task.workspace.reader).update(
            status=Assignment.Status.PENDING, completed_at=None)
        audit_record(action="annotation.withdraw", project=task.workspace.project,
                     target=current, detail={"ls_annotation": ls_annotation_id})
    return True


# --- reconcile -----------------------------------------------------------------------


def workspace_reconcile(ws: Workspace, client: LabelStudioClient | None = None
                        ) -> dict[str, int]:
    """Make the platform hold exactly Label Studio's annotations for this workspace."""
    client = client or ls_client()
    tasks = {t.ls_task_id: t for t in ws.tasks.select_related("image", "workspace",
                                                               "adjudication")}
    counts = {"created": 0, "unchanged": 0, "violation": 0, "adjudicated": 0, "withdrawn": 0,
              "rejected": 0}
    for ls_task in client.export_project_annotations(ws.ls_project_id):
        task = tasks.get(int(ls_task["id"]))
        if task is None:
            continue
        anns = sorted(ls_task.get("annotations") or [],
                      key=lambda a: (a.get("updated_at") or "", a["id"]))
        own = [a for a in anns if _is_reader(a, ws)]
        for other in (a for a in anns if not _is_reader(a, ws)):
            counts[ls_annotation_apply(task, other)] += 1
        if own:
            try:
                counts[ls_annotation_apply(task, own[-1])] += 1
            except DomainError as exc:
                counts["rejected"] += 1
                logger.warning("reconcile: task %s rejected (%s)", task.ls_task_id, exc.code)
        else:
            current = ReaderAnnotation.objects.filter(
                image=task.image, reader=ws.reader, is_current=True,
                source=ReaderAnnotation.Source.LABEL_STUDIO).first()
            if current is not None and ls_annotation_withdraw(task, int(current.external_id)):
                counts["withdrawn"] += 1
    return counts


def _is_reader(annotation: Mapping[str, Any], ws: Workspace) -> bool:
    account = getattr(ws.reader, "ls_account", None)
    return account is not None and completed_by_id(annotation) == account.ls_user_id


def reconcile_all() -> dict[str, int]:
    client = ls_client()
    total: dict[str, int] = {}
    for ws in Workspace.objects.select_related("reader__ls_account", "project"):
        for k, v in workspace_reconcile(ws, client).items():
            total[k] = total.get(k, 0) + v
    return total


# --- adjudication workspaces ----------------------------------------------------------


def adjudications_push(project: Project, client: LabelStudioClient | None = None) -> int:
    """Open adjudication cases become tasks in an adjudicator's workspace, with every
    reader's boxes and the consensus as pre-labels (model_version = who drew them)."""
    client = client or ls_client()
    judges = list(Reader.objects.filter(is_adjudicator=True, active=True).order_by("code"))
    pushed = 0
    for adj in Adjudication.objects.filter(project=project, status="pending",
                                           tasks__isnull=True).select_related("image"):
        readers_of_image = set(adj.image.assignments.values_list("reader_id", flat=True))
        judge = next((j for j in judges if j.pk not in readers_of_image), None)
        if judge is None:
            continue
        ws = workspace_ensure(project, judge, Workspace.Kind.ADJUDICATION, client)
        (tid,) = client.import_tasks(ws.ls_project_id, [_task_data(adj.image)])
        WorkspaceTask.objects.create(workspace=ws, image=adj.image, ls_task_id=tid,
                                     adjudication=adj)
        for version, result in _adjudication_prelabels(adj):
            client.create_prediction(tid, result, None, version)
        pushed += 1
    return pushed


def _adjudication_prelabels(adj: Adjudication):
    image = adj.image
    names = dict(LabelClass.objects.filter(project_id=image.project_id)
                 .values_list("class_id", "name"))
    for ann in image.annotations.filter(is_current=True, excluded_reason="").exclude(
            source=ReaderAnnotation.Source.ADJUDICATION).select_related("reader"):
        boxes = list(ann.boxes.select_related("label_class"))
        yield f"reader-{ann.reader.code}", build_result(
            [[b.x_min, b.y_min, b.x_max, b.y_max] for b in boxes],
            [b.label_class.name for b in boxes], original_width=image.width,
            original_height=image.height, image_labels=ann.image_labels)
    row = image.consensus.filter(run=adj.consensus_run).first()
    if row is not None:
        boxes = list(row.boxes.all())
        yield "consensus", build_result(
            [[b.x_min, b.y_min, b.x_max, b.y_max] for b in boxes],
            [names[b.label_class.class_id] for b in boxes], original_width=image.width,
            original_height=image.height, scores=[b.score for b in boxes],
            image_labels=row.image_labels)
