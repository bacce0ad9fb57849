"""Label Studio as the reading front-end; the platform as the source of truth.

* ``workspace_ensure``: one Label Studio organization and project per (platform project,
  reader, kind), made through the bridge inside Label Studio.  The community edition shows
  everything in an organization to every member, so the organization is the boundary: its
  owner is a service user the platform acts as, its only other member the reader's user,
  who signs in through the platform (``workspace_sign_in_url``), never with a password.
  Each workspace has its own webhook URL and secret.
* ``assignments_push``: assigned images become tasks in their reader's workspace, with a
  signed image URL and the pseudonymous image id only.
* ``ls_annotation_apply``: THE place a Label Studio annotation becomes a reader annotation
  (used by webhooks, after re-reading the annotation from Label Studio, and by reconcile).
  An annotation by anyone but the workspace's reader, and any change after blinding ended
  for the reader (the image is final for them), is a protocol violation: kept, excluded.
* ``workspace_reconcile``: pulls a workspace's annotations and repairs what webhooks
  missed (creates, updates, deletions).  Running it twice changes nothing; one failing
  workspace does not stop the others.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

import cv2
import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from annotations import events
from annotations.errors import DomainError
from annotations.label_studio.client import LabelStudioClient, completed_by_id
from annotations.label_studio.config import (
    EXPLANATION_CONTROL,
    label_config,
    validate_label_config,
)
from annotations.label_studio.masks import (
    MASK_TYPES,
    MAX_MASK_REGIONS,
    brush_region,
    region_mask,
)
from annotations.label_studio.regions import build_result, parse_result
from annotations.label_studio.tickets import sign_in_url, ticket_mint
from annotations.models import (
    Adjudication,
    Assignment,
    Image,
    LabelClass,
    MaskClass,
    Project,
    ProtocolViolation,
    Reader,
    ReaderAnnotation,
    ReconcileRun,
    Workspace,
    WorkspaceTask,
)
from annotations.services import locks, runs
from annotations.services.adjudication import adjudication_decide
from annotations.services.annotating import (
    BoxIn,
    MaskIn,
    project_label_classes,
    reader_annotation_matches,
    reader_annotation_record,
    taxonomy_cached,
)
from annotations.services.audit import audit_record
from annotations.services.exports import project_mask_classes, project_taxonomy
from annotations.services.feedback import feedback_record
from annotations.services.image_state import consensus_is_final
from annotations.services.prelabels import prelabel_for
from annotations.services.signing import image_url
from annotations.services.storage import mask_read

logger = logging.getLogger(__name__)


def ls_client() -> LabelStudioClient:
    """The server-level client (health, and the bridge that provisions workspaces)."""
    if not settings.LABEL_STUDIO_TOKEN:
        raise DomainError("label_studio_unavailable", "CXR_LABEL_STUDIO_TOKEN is not set",
                          status=503)
    return LabelStudioClient(settings.LABEL_STUDIO_URL, settings.LABEL_STUDIO_TOKEN,
                             timeout=settings.LABEL_STUDIO_TIMEOUT)


def ws_client(ws: Workspace) -> LabelStudioClient:
    """A client acting as the workspace's service user: it sees that organization only."""
    if not ws.service_token or ws.ls_organization_id is None:
        raise DomainError("legacy_workspace",
                          f"workspace {ws.pk} predates per-workspace organizations (it was "
                          "not blind): delete it and push again", status=409)
    return LabelStudioClient(settings.LABEL_STUDIO_URL, ws.service_token,
                             timeout=settings.LABEL_STUDIO_TIMEOUT)


def webhook_url(ws: Workspace) -> str:
    return (settings.PLATFORM_URL_FOR_LABEL_STUDIO.rstrip("/")
            + f"/api/label-studio/webhook/{ws.pk}/")


def webhook_secret(ws: Workspace) -> str:
    """The workspace's own webhook secret, derived so that it is never stored.

    Only that workspace's organization holds it (its members can read webhook headers), so
    a reader who reads it can speak only for their own workspace, and even there every
    event is re-read from Label Studio before anything is stored.
    """
    return hmac.new(settings.LABEL_STUDIO_WEBHOOK_SECRET.encode(),
                    f"webhook\x00{ws.pk}\x00{ws.ls_project_id}".encode(),
                    hashlib.sha256).hexdigest()


# --- workspaces ----------------------------------------------------------------------


def workspace_ensure(project: Project, reader: Reader, kind: str = Workspace.Kind.READING,
                     client: LabelStudioClient | None = None) -> Workspace:
    ws = Workspace.objects.filter(project=project, reader=reader, kind=kind).first()
    if ws is not None:
        return ws
    client = client or ls_client()
    accounts = client.provision_workspace(f"{project.pk}:{reader.pk}:{kind}",
                                          settings.LABEL_STUDIO_BRIDGE_SECRET)
    service = LabelStudioClient(settings.LABEL_STUDIO_URL, accounts.service_token,
                                timeout=settings.LABEL_STUDIO_TIMEOUT)
    taxonomy = project_taxonomy(project)
    mask_classes = project_mask_classes(project)
    config = label_config(taxonomy, mask_classes, explanations=project.explanation_prelabels)
    validate_label_config(config, taxonomy, mask_classes,
                          explanations=project.explanation_prelabels)
    suffix = "adjudication" if kind == Workspace.Kind.ADJUDICATION else "reading"
    ls_id = service.create_project(f"{project.name} · {reader.code} · {suffix}", config)
    ws = Workspace.objects.create(
        project=project, reader=reader, kind=kind, ls_project_id=ls_id,
        ls_organization_id=accounts.organization_id,
        ls_reader_user_id=accounts.reader_user_id,
        ls_service_user_id=accounts.service_user_id, service_token=accounts.service_token)
    service.create_webhook(ls_id, webhook_url(ws),
                           headers={settings.LABEL_STUDIO_WEBHOOK_HEADER: webhook_secret(ws)})
    audit_record(action="label_studio.workspace_create", project=project, target=ws,
                 detail={"reader": reader.code, "kind": kind,
                         "organization": accounts.organization_id})
    return ws


def workspace_sign_in_url(*, workspace: Workspace, reader: Reader) -> str:
    """A one-time Label Studio sign-in link to the reader's own workspace.

    The caller has authenticated ``reader`` (a platform session); nobody gets a link to a
    workspace that is not theirs.
    """
    if workspace.reader_id != reader.pk or not reader.active:
        raise DomainError("not_found", "no such workspace", status=404)
    if workspace.kind == Workspace.Kind.ADJUDICATION and not (
            reader.is_adjudicator and reader.adjudicates.filter(pk=workspace.project_id).exists()):
        raise DomainError("not_found", "no such workspace", status=404)
    ticket = ticket_mint(user_id=workspace.ls_reader_user_id,
                         project_id=workspace.ls_project_id,
                         secret=settings.LABEL_STUDIO_BRIDGE_SECRET,
                         ttl=settings.LABEL_STUDIO_TICKET_TTL)
    audit_record(action="label_studio.sign_in", project=workspace.project, target=workspace,
                 detail={"reader": reader.code})
    return sign_in_url(settings.LABEL_STUDIO_PUBLIC_URL, ticket)


def _task_data(image: Image) -> dict[str, Any]:
    return {"image": image_url(image, "display", ttl=settings.LABEL_STUDIO_IMAGE_URL_TTL),
            "image_id": image.pseudo_id}


def assignments_push(project: Project, client: LabelStudioClient | None = None) -> int:
    """Put every assigned image without a task into its reader's workspace.

    One push per project at a time (the admin's Push, the worker after new assignments):
    two at once would both see an image unplaced and make two Label Studio tasks of it."""
    with locks.exclusive(f"assignments-push:{project.pk}"):
        return _assignments_push(project, client or ls_client())


def _assignments_push(project: Project, client: LabelStudioClient) -> int:
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
        service = ws_client(ws)
        ids = service.import_tasks(ws.ls_project_id, [_task_data(a.image) for a in assignments])
        WorkspaceTask.objects.bulk_create(
            WorkspaceTask(workspace=ws, image=a.image, ls_task_id=tid)
            for a, tid in zip(assignments, ids, strict=True))
        if project.show_prelabels:
            _push_prelabels(ws, assignments, ids, service)
        pushed += len(ids)
    audit_record(action="label_studio.assignments_push", project=project,
                 detail={"tasks": pushed})
    return pushed


def _push_prelabels(ws: Workspace, assignments: list[Assignment], task_ids: list[int],
                    client: LabelStudioClient) -> None:
    """Model pre-labels, only when the project's switch is on (they bias a read)."""
    for a, tid in zip(assignments, task_ids, strict=True):
        pred = prelabel_for(a.image)
        if pred is not None:
            client.create_prediction(tid, pred["result"], pred["score"], pred["model_version"])
            WorkspaceTask.objects.filter(ls_task_id=tid).update(prediction=pred["prediction"],
                                                                 mask_prediction=pred["mask_prediction"])


def workspaces_config_update(project: Project) -> int:
    """Give every workspace of ``project`` the labeling config its settings call for now
    (turning the explanation overlay on adds its control; a control is never removed,
    since readers' annotations may hold regions of it).  How many were updated."""
    taxonomy, mask_classes = project_taxonomy(project), project_mask_classes(project)
    config = label_config(taxonomy, mask_classes, explanations=True)
    validate_label_config(config, taxonomy, mask_classes, explanations=True)
    n = 0
    for ws in project.workspaces.all():
        ws_client(ws).update_project(ws.ls_project_id, label_config=config)
        n += 1
    return n


# --- applying Label Studio annotations ----------------------------------------------


def _updated_at(annotation: Mapping[str, Any]) -> dt.datetime | None:
    raw = annotation.get("updated_at") or annotation.get("created_at")
    return parse_datetime(raw) if isinstance(raw, str) else None


def ls_result_boxes(annotation: Mapping[str, Any], image: Image
                    ) -> tuple[list[BoxIn], list[str]]:
    """A Label Studio result as original-pixel boxes and image labels."""
    names = {lc.name: lc.image_level for lc in project_label_classes(image.project_id)}
    parsed = parse_result(
        [r for r in _result_items(annotation) if r.get("type") not in MASK_TYPES],
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


def _result_items(annotation: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    result = annotation.get("result") or []
    if not isinstance(result, list) or not all(isinstance(r, Mapping) for r in result):
        raise DomainError("invalid_region", "a result is a list of regions")
    return result


def _mask_items(annotation: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The result's reader mask regions (the explanation control holds the model's
    overlays, never a reader's mask)."""
    return [r for r in _result_items(annotation) if r.get("type") in MASK_TYPES
            and r.get("from_name") != EXPLANATION_CONTROL]


def ls_result_masks(annotation: Mapping[str, Any], image: Image) -> list[MaskIn]:
    """A Label Studio result's brush and polygon regions as one mask per class, in the
    image's original pixels.  Readers paint on the display derivative: a region's canvas
    must be the display size (scaled up by nearest neighbour: each display pixel covers
    the original pixels it shows) or the original size; any other canvas, or more than
    ``MAX_MASK_REGIONS`` regions, is refused before anything is decoded."""
    items = _mask_items(annotation)
    if not items:
        return []
    if len(items) > MAX_MASK_REGIONS:
        raise DomainError("invalid_region", f"more than {MAX_MASK_REGIONS} mask regions")
    canvases = {(image.display_width, image.display_height), (image.width, image.height)}
    for item in items:
        try:
            canvas = (int(item["original_width"]), int(item["original_height"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise DomainError("invalid_region", "mask region has no original size") from exc
        if canvas not in canvases:
            raise DomainError("invalid_region", f"a mask painted on a {canvas[0]}x{canvas[1]}"
                              f" canvas; this image is {image.display_width}x"
                              f"{image.display_height} as shown")
    allowed = set(MaskClass.objects.filter(project_id=image.project_id)
                  .values_list("name", flat=True))
    size = None
    merged: dict[str, np.ndarray] = {}
    for item in items:
        label, mask = region_mask(item, allowed, size)
        size = (mask.shape[1], mask.shape[0])
        merged[label] = merged[label] | mask if label in merged else mask
    out = []
    for label, mask in sorted(merged.items()):
        if mask.shape != (image.height, image.width):
            mask = cv2.resize(mask.astype(np.uint8), (image.width, image.height),
                              interpolation=cv2.INTER_NEAREST).astype(bool)
        out.append(MaskIn(label, mask))
    return out


def ls_result_signature(annotation: Mapping[str, Any], image: Image) -> tuple:
    """What a result says, comparable without decoding masks: boxes, image labels and
    the canonical JSON of its mask regions (a forged or stale payload differs there;
    only Label Studio's own copy is ever decoded)."""
    boxes, labels = ls_result_boxes(annotation, image)
    masks = sorted(json.dumps([r.get("type"), r.get("from_name"), r.get("value"),
                               r.get("original_width"), r.get("original_height")],
                              sort_keys=True, default=str) for r in _mask_items(annotation))
    return tuple(boxes), tuple(labels), hashlib.sha256("\n".join(masks).encode()).hexdigest()


def _content_digest(annotation: Mapping[str, Any] | None) -> str:
    body = "deleted" if annotation is None else json.dumps(
        [annotation.get("result") or [], bool(annotation.get("was_cancelled"))],
        sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()


def _violation(task: WorkspaceTask, ann_id: int, kind: str, annotation: Mapping[str, Any] | None,
               reason: str, user_id: int | None = None) -> str:
    """Keep one protocol violation per (annotation, kind, content); returns "violation"."""
    ws = task.workspace
    _, created = ProtocolViolation.objects.get_or_create(
        ls_annotation_id=ann_id, kind=kind, content_digest=_content_digest(annotation),
        defaults={"workspace": ws, "image": task.image, "ls_user_id": user_id,
                  "actual_reader": ws.reader if kind == ProtocolViolation.Kind.AFTER_UNBLINDING
                  else None,
                  "detail": {"reason": reason,
                             "result": None if annotation is None else
                             _without_brush_codes(annotation.get("result"))}},
    )
    if created:
        logger.warning("protocol violation (%s): annotation %s in workspace %s", kind, ann_id,
                       ws.pk)
        audit_record(action="label_studio.protocol_violation", project=ws.project, target=ws,
                     detail={"ls_annotation": ann_id, "kind": kind, "reason": reason})
    return "violation"


def _without_brush_codes(result: Any) -> Any:
    """A result as kept in a violation: brush codes replaced by their length and digest
    (a violation records what was attempted, not megabytes of paint)."""
    if not isinstance(result, list):
        return None
    out = []
    for r in result[:200]:
        value = r.get("value") if isinstance(r, Mapping) else None
        if isinstance(value, Mapping) and "rle" in value:
            code = json.dumps(value.get("rle"), default=str).encode()
            r = {**r, "value": {**value, "rle": {"bytes": len(code),
                                                  "sha256": hashlib.sha256(code).hexdigest()}}}
        out.append(r)
    return out


def _frozen(task: WorkspaceTask) -> bool:
    """Blinding has ended for this reader: the image is final, so they may see the others."""
    return consensus_is_final(task.image)


def ls_annotation_apply(task: WorkspaceTask, annotation: Mapping[str, Any],
                        compared: bool = False) -> str:
    """Record one Label Studio annotation of ``task``; returns what happened.

    ``annotation`` is what Label Studio holds (re-read with the workspace's service
    credentials), never a webhook payload.  ``created`` / ``unchanged`` / ``violation`` /
    ``adjudicated``.  Raises DomainError for content the platform cannot accept (nothing is
    stored).  ``compared``: the caller has already found this version is not the stored
    one (a reconcile pass compares its whole workspace in one query).
    """
    ws = task.workspace
    user_id = completed_by_id(annotation)
    ann_id = int(annotation["id"])
    if user_id != ws.ls_reader_user_id:
        return _violation(task, ann_id, ProtocolViolation.Kind.FOREIGN_ANNOTATOR, annotation,
                          "annotation by someone other than the workspace's reader", user_id)
    if ws.kind == Workspace.Kind.READING and not compared and \
            _already_current(task, ann_id, annotation):
        return "unchanged"
    boxes, labels = ls_result_boxes(annotation, task.image)
    masks = ls_result_masks(annotation, task.image)
    if ws.kind == Workspace.Kind.ADJUDICATION:
        adj = task.adjudication
        if adj is None or adj.status != Adjudication.Status.PENDING:
            return "unchanged"
        adjudication_decide(adjudication=adj, adjudicator=ws.reader, boxes=boxes,
                            image_labels=labels, masks=masks)
        return "adjudicated"
    cancelled = bool(annotation.get("was_cancelled"))
    if _frozen(task) and not reader_annotation_matches(
            image=task.image, reader=ws.reader, boxes=boxes, image_labels=labels,
            was_cancelled=cancelled, masks=masks):
        return _violation(task, ann_id, ProtocolViolation.Kind.AFTER_UNBLINDING, annotation,
                          "read changed after the image was final for its reader", user_id)
    recorded, created = reader_annotation_record(
        image=task.image, reader=ws.reader, boxes=boxes, image_labels=labels, masks=masks,
        source=ReaderAnnotation.Source.LABEL_STUDIO, external_id=str(ann_id),
        external_updated_at=_updated_at(annotation), was_cancelled=cancelled,
    )
    if created and (task.prediction_id is not None or task.mask_prediction_id is not None):
        try:  # feedback is about the model: it never costs the reader their read
            with transaction.atomic():
                feedback_record(recorded)
        except DomainError as exc:
            logger.warning("feedback on annotation %s not recorded (%s)", ann_id, exc.code)
    return "created" if created else "unchanged"


def _already_current(task: WorkspaceTask, ann_id: int, annotation: Mapping[str, Any]) -> bool:
    """This very version (Label Studio id and ``updated_at``) is the reader's current
    read already: nothing to decode or compare (a reconcile pass over unchanged reads,
    a webhook delivered twice).  Any edit moves ``updated_at``, so it is never skipped."""
    stamp = _updated_at(annotation)
    return stamp is not None and ReaderAnnotation.objects.filter(
        image=task.image, reader=task.workspace.reader, is_current=True,
        source=ReaderAnnotation.Source.LABEL_STUDIO, external_id=str(ann_id),
        external_updated_at=stamp).exists()


def ls_annotation_withdraw(task: WorkspaceTask, ls_annotation_id: int) -> bool:
    """The reader's Label Studio annotation was deleted: their read no longer counts
    (unless blinding had ended for them: then the deletion is a violation, the read stays)."""
    current = ReaderAnnotation.objects.filter(
        image=task.image, reader=task.workspace.reader, is_current=True,
        source=ReaderAnnotation.Source.LABEL_STUDIO, external_id=str(ls_annotation_id),
    ).first()
    if current is None:
        return False
    if _frozen(task):
        _violation(task, ls_annotation_id, ProtocolViolation.Kind.AFTER_UNBLINDING, None,
                   "read deleted after the image was final for its reader")
        return False
    with transaction.atomic():
        ReaderAnnotation.objects.filter(pk=current.pk).update(is_current=False)
        Assignment.objects.filter(image=task.image, reader=task.workspace.reader).update(
            status=Assignment.Status.PENDING, completed_at=None)
        audit_record(action="annotation.withdraw", project=task.workspace.project,
                     target=current, detail={"ls_annotation": ls_annotation_id})
    return True


# --- reconcile -----------------------------------------------------------------------


#: Tasks changed this long before the last pass's high-water mark are looked at again:
#: an annotation saved just before that pass may commit (with its earlier time) after it.
RECONCILE_OVERLAP = dt.timedelta(minutes=2)
LS_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
#: Tasks applied per transaction (and between heartbeats) in a reconcile pass.
RECONCILE_CHUNK = 50


def _ls_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(dt.UTC)


def _reconcile_since(ws: Workspace, full: bool) -> str | None:
    """The Label Studio time after which this pass looks (None: every task)."""
    if full or not ws.ls_reconciled_through:
        return None
    since = _ls_time(ws.ls_reconciled_through) - RECONCILE_OVERLAP
    return since.strftime(LS_TIME_FORMAT)


def workspace_reconcile(ws: Workspace, client: LabelStudioClient | None = None,
                        heartbeat: Callable[[], None] | None = None,
                        full: bool = True) -> dict[str, int]:
    """Make the platform hold exactly Label Studio's annotations for this workspace
    (``heartbeat``: called every 50 tasks, a long workspace's sign of life).

    ``full=False``: only the tasks Label Studio changed since the last pass's
    high-water mark (less an overlap) are exported and applied, so a pass over
    thousands of untouched tasks costs one listing; a workspace never reconciled
    gets a full pass.  Either way the mark moves to the latest change seen."""
    client = client or ws_client(ws)
    since = _reconcile_since(ws, full)
    changes = client.task_changes(ws.ls_project_id, since=since)
    counts = {"created": 0, "unchanged": 0, "violation": 0, "adjudicated": 0, "withdrawn": 0,
              "rejected": 0, "scanned": len(changes)}
    if since is not None and not changes:
        return counts
    tasks = {t.ls_task_id: t for t in ws.tasks.select_related("image", "workspace__reader",
                                                               "workspace__project",
                                                               "adjudication")}
    current = {} if ws.kind != Workspace.Kind.READING else {
        (image_id, ext): stamp for image_id, ext, stamp in ReaderAnnotation.objects
        .filter(reader=ws.reader, image__project=ws.project, is_current=True,
                source=ReaderAnnotation.Source.LABEL_STUDIO)
        .values_list("image_id", "external_id", "external_updated_at")}
    exported = client.export_project_annotations(
        ws.ls_project_id, ids=None if since is None else [i for i, _ in changes])
    # in image order: concurrent chunks (another workspace's pass, a webhook naming
    # several reads) then lock the images they share in the same order
    known = sorted(((tasks[int(t["id"])], t) for t in exported if int(t["id"]) in tasks),
                   key=lambda pair: pair[0].image_id)
    for start in range(0, len(known), RECONCILE_CHUNK):
        if heartbeat is not None and start:
            heartbeat()
        _reconcile_chunk(ws, known[start:start + RECONCILE_CHUNK], counts, current)
    marks = [ws.ls_reconciled_through] if ws.ls_reconciled_through else []
    latest = max(marks + [u for _, u in changes], key=_ls_time, default="")
    fields = {"ls_reconciled_through": latest}
    if since is None:
        fields["reconciled_full_at"] = timezone.now()
    Workspace.objects.filter(pk=ws.pk).update(**fields)
    for key, value in fields.items():
        setattr(ws, key, value)
    return counts


def _reconcile_chunk(ws: Workspace, chunk: list[tuple[WorkspaceTask, Mapping[str, Any]]],
                     counts: dict[str, int], current: Mapping[tuple[int, str], Any]) -> None:
    """One transaction for the chunk, and one consensus run created in it for the images
    whose reads it completed: a pass that finds thousands of missed reads starts a run
    per chunk, not one per image, and a pass killed mid-chunk stored none of it (the
    next pass redoes it).

    If that run cannot be created (the project's stored strategy refused), the chunk is
    applied again task by task, as webhooks would have: only the reads that complete an
    image are refused then, and the rest of the workspace is not held up behind them.
    """
    mine = dict.fromkeys(counts, 0)
    try:
        with transaction.atomic(), events.coalesced(events.ReadsCompleted), \
                taxonomy_cached():
            for task, ls_task in chunk:
                _reconcile_task(ws, task, ls_task, mine, current)
    except DomainError as exc:
        logger.warning("reconcile: workspace %s, a chunk's consensus refused (%s); "
                       "applying it task by task", ws.pk, exc.code)
        mine = dict.fromkeys(counts, 0)
        for task, ls_task in chunk:
            _reconcile_task(ws, task, ls_task, mine, current)
    for key, value in mine.items():
        counts[key] += value


def _reconcile_task(ws: Workspace, task: WorkspaceTask, ls_task: Mapping[str, Any],
                    counts: dict[str, int], current: Mapping[tuple[int, str], Any]) -> None:
    """Apply one exported task: foreign annotations are violations, the reader's latest
    annotation is their read, none at all withdraws the stored one.  ``current``: the
    reader's stored Label Studio reads, (image, annotation id) -> ``updated_at``, read
    before the export (a version changed since has a later stamp there)."""
    anns = sorted(ls_task.get("annotations") or [],
                  key=lambda a: (a.get("updated_at") or "", a["id"]))
    own = [a for a in anns if completed_by_id(a) == ws.ls_reader_user_id]
    for other in (a for a in anns if completed_by_id(a) != ws.ls_reader_user_id):
        counts[ls_annotation_apply(task, other)] += 1
    if own:
        latest = own[-1]
        stamp = _updated_at(latest)
        if stamp is not None and current.get((task.image_id, str(latest["id"]))) == stamp:
            counts["unchanged"] += 1  # this very version is stored (the daily full pass)
            return
        try:  # a refused read stores nothing (recording and deciding are atomic)
            counts[ls_annotation_apply(task, latest, compared=True)] += 1
        except DomainError as exc:
            counts["rejected"] += 1
            logger.warning("reconcile: task %s rejected (%s)", task.ls_task_id, exc.code)
        return
    stored = ReaderAnnotation.objects.filter(
        image=task.image, reader=ws.reader, is_current=True,
        source=ReaderAnnotation.Source.LABEL_STUDIO).first()
    if stored is not None and ls_annotation_withdraw(task, int(stored.external_id)):
        counts["withdrawn"] += 1


def reconcile_all(heartbeat: Callable[[], None] | None = None,
                  full: bool | None = None) -> dict[str, Any]:
    """Reconcile every workspace; one that fails (deleted behind our back, Label Studio
    refusing) is reported and the others still get repaired.  ``heartbeat`` is called
    before each workspace (a reconcile run's liveness).

    ``full``: True looks at every task, False only at tasks changed since the last
    pass; None (the periodic pass) does a full pass of a workspace whose last one is
    older than ``CXR_RECONCILE_FULL_HOURS`` and an incremental one otherwise."""
    cutoff = timezone.now() - dt.timedelta(hours=settings.RECONCILE_FULL_HOURS)
    total: dict[str, Any] = {}
    failed: list[dict[str, Any]] = []
    for ws in Workspace.objects.select_related("reader", "project").order_by("pk"):
        if heartbeat is not None:
            heartbeat()
        try:
            whole = full if full is not None else (
                ws.reconciled_full_at is None or ws.reconciled_full_at < cutoff)
            counts = workspace_reconcile(ws, heartbeat=heartbeat, full=whole)
        except DomainError as exc:
            failed.append({"workspace": ws.pk, "project": ws.project.slug,
                           "reader": ws.reader.code, "error": exc.code})
            logger.warning("reconcile: workspace %s failed (%s)", ws.pk, exc.code)
            audit_record(action="label_studio.reconcile_failed", project=ws.project,
                         target=ws, detail={"error": exc.code})
            continue
        for k, v in counts.items():
            total[k] = total.get(k, 0) + v
    total["failed_workspaces"] = failed
    return total


def reconcile_run_create(*, trigger: str = ReconcileRun.Trigger.MANUAL, actor: Any = None,
                         dispatch: bool = True) -> ReconcileRun:
    """A reconcile pass as a run (its record is what the admin reads); a pass asked for
    while one is pending or running is that one (two passes at once would only repeat
    each other's work)."""
    with locks.exclusive("reconcile-run-create"):
        active = ReconcileRun.objects.filter(status__in=runs.ACTIVE).order_by("pk").first()
        if active is not None:
            return active
        run = ReconcileRun.objects.create(
            trigger=trigger,
            created_by=actor if getattr(actor, "is_authenticated", False) else None)
        runs.run_created(run, dispatch=dispatch)
    return run


def reconcile_run_execute(*, run_id: int) -> ReconcileRun:
    """Claim and run one pass; heartbeats between workspaces, so a worker lost mid-way is
    seen by the sweep and the pass re-queued (reconciling twice changes nothing)."""
    def work(run: ReconcileRun) -> dict[str, Any]:
        total = reconcile_all(heartbeat=lambda: runs.run_heartbeat(run, cancellable=False))
        failed = total.pop("failed_workspaces")
        return {"stats": total, "failed_workspaces": failed}

    return runs.run_execute(ReconcileRun, run_id, work)


# --- adjudication workspaces ----------------------------------------------------------


def adjudications_push(project: Project, client: LabelStudioClient | None = None) -> int:
    """Open adjudication cases become tasks in an adjudicator's workspace, with every
    reader's boxes and the consensus as pre-labels (model_version = who drew them)."""
    client = client or ls_client()
    judges = list(project.adjudicators.filter(is_adjudicator=True, active=True).order_by("code"))
    pushed = 0
    for adj in Adjudication.objects.filter(project=project, status="pending",
                                           tasks__isnull=True).select_related("image"):
        readers_of_image = set(adj.image.assignments.values_list("reader_id", flat=True))
        judge = next((j for j in judges if j.pk not in readers_of_image), None)
        if judge is None:
            continue
        ws = workspace_ensure(project, judge, Workspace.Kind.ADJUDICATION, client)
        service = ws_client(ws)
        (tid,) = service.import_tasks(ws.ls_project_id, [_task_data(adj.image)])
        WorkspaceTask.objects.create(workspace=ws, image=adj.image, ls_task_id=tid,
                                     adjudication=adj)
        for version, result in _adjudication_prelabels(adj):
            service.create_prediction(tid, result, None, version)
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
            original_height=image.height, image_labels=ann.image_labels) + _display_brushes(
            image, ann.masks.select_related("mask_class"))
    row = image.consensus.filter(run=adj.consensus_run).first()
    if row is not None:
        boxes = list(row.boxes.all())
        yield "consensus", build_result(
            [[b.x_min, b.y_min, b.x_max, b.y_max] for b in boxes],
            [names[b.label_class.class_id] for b in boxes], original_width=image.width,
            original_height=image.height, scores=[b.score for b in boxes],
            image_labels=row.image_labels) + _display_brushes(
            image, row.masks.select_related("mask_class"))


def _display_brushes(image: Image, stored) -> list[dict[str, Any]]:
    """Stored masks (original pixels) as brush regions on the canvas the adjudicator
    sees: the display derivative's size."""
    size = (image.display_width or image.width, image.display_height or image.height)
    out = []
    for m in stored:
        mask = mask_read(m.path)
        if (mask.shape[1], mask.shape[0]) != size:
            mask = cv2.resize(mask.astype(np.uint8), size,
                              interpolation=cv2.INTER_NEAREST).astype(bool)
        out.append(brush_region(mask, m.mask_class.name))
    return out
