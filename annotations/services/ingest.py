"""DICOM / PNG / JPEG ingest: stage, then process each file in its own task.

Two steps, so that one bad file never stops a batch and a crash never leaves
half-written state:

1. ``ingest_batch_create`` copies every input into the staging area (atomic
   copies; zips are unpacked member by member) and records one ``IngestItem``
   per file.  Original file names may carry identity: only a keyed hash of the
   name stem is kept, to match CSV imports that name images by file.
2. ``ingest_item_process`` (one Celery task per item, queue ``ingest``) decodes,
   validates, de-identifies, renders and writes the derivatives, and only then
   creates the database rows.  Rejected files go to quarantine with a reason;
   duplicates (same SOP Instance UID or the same decoded pixels) are reported.
   Processing an item that is no longer pending does nothing (idempotent).
"""

from __future__ import annotations

import logging
import secrets
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.utils import timezone

from annotations import events
from annotations.errors import DomainError
from annotations.imaging import pseudonym
from annotations.imaging.anatomy import anatomy_finding
from annotations.imaging.deid import deidentify
from annotations.imaging.loader import Limits, LoadedImage, load_file
from annotations.imaging.render import encode_png, render
from annotations.models import Image, IngestBatch, IngestItem, Project, Study
from annotations.services import quarantine, runs, storage
from annotations.services.audit import audit_record

logger = logging.getLogger(__name__)


def source_key(name: str) -> str:
    """Keyed hash of a file's name stem (VinBigData-style CSVs name images by stem)."""
    stem = Path(name).name.rsplit(".", 1)[0] if "." in Path(name).name else Path(name).name
    return pseudonym.pseudo_id(settings.PSEUDONYM_KEY, "source", stem.lower())


def project_limits(project: Project) -> Limits:
    return Limits(
        min_side=settings.MIN_IMAGE_SIDE,
        max_side=settings.MAX_IMAGE_SIDE,
        modalities=tuple(settings.RADIOGRAPH_MODALITIES),
        allow_burned_in=project.allow_burned_in_annotation,
    )


# --- step 1: staging -----------------------------------------------------------


def ingest_batch_create(
    *, project: Project, inputs: Iterable[Path], actor: Any = None, source: str = "command"
) -> IngestBatch:
    """Stage every file under ``inputs`` (files, folders, zips) as one batch.

    All or nothing: an input that is missing or a zip over the limits
    (``storage.zip_limits``) refuses the whole batch before any row exists,
    and removes what was staged so far.  Zip members are copied out in pieces.
    """
    stage_dir: str | None = None
    try:
        with transaction.atomic():
            batch = IngestBatch.objects.create(
                project=project, source=source,
                created_by=actor if getattr(actor, "is_authenticated", False) else None,
            )
            stage_dir = str(batch.pk)
            items = _stage_inputs(batch, stage_dir, inputs)
            IngestItem.objects.bulk_create(items)
            audit_record(action="ingest.batch_create", actor=actor, project=project,
                         target=batch, detail={"files": len(items), "source": source})
            _created(batch, items)
    except BaseException:
        if stage_dir is not None:
            storage.folder_delete(storage.STAGING, stage_dir)
        raise
    return batch


def _stage_inputs(batch: IngestBatch, stage_dir: str, inputs: Iterable[Path]
                  ) -> list[IngestItem]:
    items = []
    seq = 0
    for inp in inputs:
        if not Path(inp).exists():
            raise DomainError("not_found", "an input path does not exist")
        for name, container, member in storage.iter_input_files(Path(inp)):
            seq += 1
            staged = f"{stage_dir}/{seq:06d}.bin"
            if isinstance(container, zipfile.ZipFile):
                storage.put_chunks(storage.STAGING, staged,
                                   storage.zip_member_chunks(container, member))
            else:
                storage.put_file(storage.STAGING, staged, container)
            items.append(IngestItem(
                batch=batch, seq=seq, staged_path=staged, source_key=source_key(name),
            ))
    return items


def ingest_batch_from_uploads(*, project: Project, files: list[Any], actor: Any) -> IngestBatch:
    """Stage uploaded files (Django ``UploadedFile``) as one batch.

    Their size was bounded while they streamed in (``annotations.api.uploads``);
    each is copied to staging chunk by chunk, never whole in memory.
    """
    batch = IngestBatch.objects.create(project=project, source="upload", created_by=actor)
    items = []
    for seq, upload in enumerate(files, start=1):
        staged = f"{batch.pk}/{seq:06d}.bin"
        storage.put_chunks(storage.STAGING, staged, upload.chunks())
        items.append(IngestItem(batch=batch, seq=seq, staged_path=staged,
                                source_key=source_key(upload.name or "")))
    IngestItem.objects.bulk_create(items)
    audit_record(action="ingest.batch_create", actor=actor, project=project, target=batch,
                 detail={"files": len(items), "source": "upload"})
    _created(batch, items)
    return batch


def _created(batch: IngestBatch, items: list[IngestItem]) -> None:
    """The handlers queue one ingest task per staged file (once this commits)."""
    events.emit(events.BatchCreated(batch_id=batch.pk, project_id=batch.project_id,
                                    item_ids=tuple(i.pk for i in items)))


def batch_counts(batch: IngestBatch) -> dict[str, int]:
    rows = batch.items.values("status").annotate(n=Count("id"))
    counts = {s.value: 0 for s in IngestItem.Status}
    counts.update({r["status"]: r["n"] for r in rows})
    counts["total"] = sum(counts[s.value] for s in IngestItem.Status)
    return counts


def batch_refresh_status(batch: IngestBatch) -> IngestBatch:
    if not batch.items.filter(status=IngestItem.Status.PENDING).exists():
        IngestBatch.objects.filter(pk=batch.pk, status=IngestBatch.Status.RUNNING).update(
            status=IngestBatch.Status.DONE, finished_at=timezone.now())
        batch.refresh_from_db()
    return batch


# --- step 2: one file ------------------------------------------------------------


def _finish(item: IngestItem, status: str, reason: str = "", detail: str = "",
            image: Image | None = None) -> IngestItem:
    """Guarded transition: only a pending item changes state (idempotent)."""
    updated = IngestItem.objects.filter(pk=item.pk, status=IngestItem.Status.PENDING).update(
        status=status, reason=reason, detail=detail[:2000], image=image,
        quarantine_path=item.quarantine_path, quarantined_at=item.quarantined_at,
        updated_at=timezone.now(),
    )
    if updated:
        item.status, item.reason, item.detail, item.image = status, reason, detail, image
    else:
        item.refresh_from_db()
    return item


def _quarantine(item: IngestItem, reason: str, message: str) -> IngestItem:
    staged = storage.stored_key(storage.STAGING, item.staged_path)
    if staged and storage.exists(storage.STAGING, staged):
        item.quarantine_path = quarantine.original_keep(staged, batch_id=item.batch_id)
    item.quarantined_at = timezone.now()
    logger.info("ingest item %s quarantined: %s", item.pk, reason)
    return _finish(item, IngestItem.Status.QUARANTINED, reason, message)


#: Stored on every imported PNG/JPEG item: such files cannot state whether their
#: pixels carry text (DICOM's Burned In Annotation), and nothing reads the pixels.
RASTER_NOTE = "PNG/JPEG: the pixels are not attested free of burned-in text"


def loaded_deidentify(loaded: LoadedImage, project: Project) -> tuple[str, str, str]:
    """(patient, study, image) pseudonyms; de-identifies DICOM in place.

    The image pseudonym is keyed by the project too (``pseudonym.image_pseudo_id``):
    image ids are unique platform-wide, so the same file ingested into two
    projects gets two ids, while re-ingest into one project finds its image.
    """
    key = settings.PSEUDONYM_KEY
    if loaded.dataset is not None:
        res = deidentify(
            loaded.dataset, key=key, pixels=loaded.pixels,
            retain_patient_characteristics=project.deid_retain_patient_characteristics)
        patient, study, instance = (res.patient_pseudo_id, res.study_pseudo_id,
                                    res.image_pseudo_id)
    else:
        # PNG/JPEG carry no identifiers: the pixels are the identity.
        patient = pseudonym.pseudo_id(key, "patient", loaded.pixel_hash, prefix="PAT-")
        study = pseudonym.pseudo_id(key, "study", loaded.pixel_hash, prefix="STU-")
        instance = pseudonym.pseudo_id(key, "instance", loaded.pixel_hash, prefix="IMG-")
    return patient, study, pseudonym.image_pseudo_id(key, str(project.pk), instance)


def _find_duplicate(project: Project, image_id: str, pixel_hash: str) -> tuple[str, Image] | None:
    dup = Image.objects.filter(project=project).filter(
        Q(pseudo_id=image_id) | Q(pixel_hash=pixel_hash)
    ).first()
    if dup is None:
        return None
    reason = "duplicate_instance" if dup.pseudo_id == image_id else "duplicate_pixels"
    return reason, dup


def _write_derivatives(project: Project, image_id: str, loaded: LoadedImage) -> dict[str, Any]:
    """Write DICOM (de-identified), display PNG and thumbnail; return their paths."""
    long_side = project.display_long_side or settings.DISPLAY_LONG_SIDE
    rendered = render(loaded.pixels, loaded.spec, long_side=long_side,
                      thumbnail_side=settings.THUMBNAIL_LONG_SIDE, use_clahe=project.clahe)
    # A random suffix keeps two racing workers from sharing (and deleting) a folder.
    rel_dir = f"projects/{project.slug}/{image_id}-{secrets.token_hex(4)}"
    out = {"dir": rel_dir, "display_path": f"{rel_dir}/display.png",
           "thumbnail_path": f"{rel_dir}/thumb.png", "dicom_path": "",
           "display_height": rendered.display.shape[0],
           "display_width": rendered.display.shape[1]}
    storage.put(storage.MEDIA, out["display_path"], encode_png(rendered.display))
    storage.put(storage.MEDIA, out["thumbnail_path"], encode_png(rendered.thumbnail))
    if loaded.dataset is not None:
        out["dicom_path"] = f"{rel_dir}/image.dcm"
        storage.put(storage.MEDIA, out["dicom_path"], storage.dicom_bytes(loaded.dataset))
    return out


def ingest_item_process(*, item_id: int) -> IngestItem:
    """Process one pending file; a file that is not pending is left alone, so a
    duplicate or re-queued message (``runs_sweep``) does nothing."""
    item = IngestItem.objects.select_related("batch__project").get(pk=item_id)
    if item.status != IngestItem.Status.PENDING:
        return item
    item = _process(item)
    if item.status != IngestItem.Status.PENDING:
        runs.ingest_batch_progress(batch_id=item.batch_id)
    return item


def _process(item: IngestItem) -> IngestItem:
    project = item.batch.project
    IngestItem.objects.filter(pk=item.pk).update(attempts=item.attempts + 1,
                                                 updated_at=timezone.now())
    staged = storage.stored_key(storage.STAGING, item.staged_path)
    if not staged or not storage.exists(storage.STAGING, staged):
        return _finish(item, IngestItem.Status.FAILED, "staged_file_missing",
                       "the staged copy of this file is gone")
    try:
        with storage.private_copy(storage.STAGING, staged) as local:
            loaded = load_file(local, project_limits(project))
        finding = anatomy_finding(loaded.body_part, loaded.view_position)
        if finding is not None and project.anatomy_policy == Project.AnatomyPolicy.QUARANTINE:
            return _quarantine(item, *finding)
        patient, study_id, image_id = loaded_deidentify(loaded, project)
    except DomainError as exc:
        return _quarantine(item, exc.code, exc.message)
    except Exception as exc:  # bad input must never stop the batch
        logger.warning("ingest item %s: unexpected %s", item.pk, type(exc).__name__)
        return _quarantine(item, "processing_error", f"unexpected {type(exc).__name__}")

    dup = _find_duplicate(project, image_id, loaded.pixel_hash)
    if dup is not None:
        storage.delete(storage.STAGING, staged)
        return _finish(item, IngestItem.Status.DUPLICATE, dup[0],
                       f"same as image {dup[1].pseudo_id}", image=dup[1])
    try:
        paths = _write_derivatives(project, image_id, loaded)
    except DomainError as exc:
        return _quarantine(item, exc.code, exc.message)
    except (ValueError, TypeError, AttributeError) as exc:
        logger.warning("ingest item %s: cannot render (%s)", item.pk, type(exc).__name__)
        return _quarantine(item, "render_failed", f"cannot render ({type(exc).__name__})")
    try:
        with transaction.atomic():
            image = _create_rows(project, item, loaded, patient, study_id, image_id, paths)
            notes = [RASTER_NOTE] if loaded.dataset is None else []
            if finding is not None and project.anatomy_policy == Project.AnatomyPolicy.FLAG:
                notes.append(f"flagged {finding[0]}: {finding[1]}")
            item = _finish(item, IngestItem.Status.IMPORTED, image=image,
                           detail="; ".join(notes))
    except IntegrityError:
        # Another worker imported the same image between our check and insert.
        storage.folder_delete(storage.MEDIA, paths["dir"])
        dup = _find_duplicate(project, image_id, loaded.pixel_hash)
        if dup is None:  # the winner rolled back too: let the task retry
            raise
        return _finish(item, IngestItem.Status.DUPLICATE, dup[0],
                       f"same as image {dup[1].pseudo_id}", image=dup[1])
    storage.delete(storage.STAGING, staged)
    return item


def _create_rows(project: Project, item: IngestItem, loaded: LoadedImage, patient: str,
                 study_id: str, image_id: str, paths: dict[str, Any]) -> Image:
    study, _ = Study.objects.get_or_create(
        project=project, pseudo_id=study_id, defaults={"patient_pseudo_id": patient}
    )
    spacing = loaded.pixel_spacing or (None, None)
    return Image.objects.create(
        project=project, study=study, pseudo_id=image_id, source_key=item.source_key,
        pixel_hash=loaded.pixel_hash, width=loaded.width, height=loaded.height,
        pixel_spacing_row=spacing[0], pixel_spacing_col=spacing[1],
        modality=loaded.modality, view_position=loaded.view_position,
        photometric=loaded.spec.photometric if loaded.dataset is not None else "",
        bits_stored=loaded.bits_stored, source_format=loaded.source_format,
        dicom_path=paths["dicom_path"], display_path=paths["display_path"],
        display_width=paths["display_width"], display_height=paths["display_height"],
        thumbnail_path=paths["thumbnail_path"],
    )


def ingest_item_fail(*, item_id: int, reason: str) -> None:
    """Final failure after retries (e.g. the database stayed unreachable)."""
    item = IngestItem.objects.get(pk=item_id)
    _finish(item, IngestItem.Status.FAILED, "task_failed", reason)
    runs.ingest_batch_progress(batch_id=item.batch_id)
