"""Import existing reads (VinBigData CSV, NIH box list, COCO) into a project.

All or nothing: the file is parsed completely by a pure parser (malformed rows
reported by line), every image must be known to the project, and every read
is recorded in one transaction.  Readers named in the file (``rad_id``) become
platform readers; readers that do not exist yet are created without a login
(``active=False``: they are never assigned new images).
"""

from __future__ import annotations

import io
import zipfile
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from annotations.archives import zip_open_checked
from annotations.consensus import ImageReads
from annotations.errors import DomainError
from annotations.formats import registry
from annotations.models import ConsensusRun, Image, Project, Reader, ReaderAnnotation
from annotations.services.annotating import BoxIn, reader_annotation_record
from annotations.services.audit import audit_record
from annotations.services.consensus import consensus_run_create
from annotations.services.exports import image_records, project_taxonomy
from annotations.services.ingest import source_key
from annotations.services.storage import zip_limits


def import_files_from_upload(raw: bytes, name: str) -> dict[str, str]:
    """One uploaded text file, or every file of an uploaded zip (VOC and YOLO come
    as many files), as ``path -> text``.

    Everything ends up in memory, so a zip is checked from its directory first
    (``storage.zip_limits``, its expanded total capped at ``IMPORT_MAX_BYTES``):
    a zip bomb is refused (413) before any member is decompressed.
    """
    buf = io.BytesIO(raw)
    try:
        if not zipfile.is_zipfile(buf):
            return {name: raw.decode("utf-8-sig")}
        zf, members = zip_open_checked(buf, zip_limits(max_total_bytes=settings.IMPORT_MAX_BYTES))
        with zf:
            return {m.filename: zf.read(m).decode("utf-8-sig") for m in members}
    except UnicodeDecodeError as exc:
        raise DomainError("invalid_upload", "the file is not UTF-8 text") from exc
    except (zipfile.BadZipFile, EOFError) as exc:
        raise DomainError("invalid_zip", "a file in the zip archive is damaged") from exc


def _resolve_images(project: Project, reads: list[ImageReads]) -> dict[str, Image]:
    """Map file-style image ids (or pseudonymous ids) to the project's images."""
    wanted = {r.image_id for r in reads}
    by_key = {source_key(i): i for i in wanted}
    found: dict[str, Image] = {}
    for image in Image.objects.filter(project=project, source_key__in=list(by_key.keys())):
        found[by_key[image.source_key]] = image
    rest = wanted - set(found)
    for image in Image.objects.filter(project=project, pseudo_id__in=list(rest)):
        found[image.pseudo_id] = image
    missing = sorted(wanted - set(found))
    if missing:
        raise DomainError("unknown_images", f"{len(missing)} images are not in this project",
                          detail=missing[:50])
    return found


def _reader(code: str) -> Reader:
    reader = Reader.objects.filter(code=code).first()
    if reader is not None:
        return reader
    user = get_user_model().objects.create_user(username=f"{code.lower()}@readers.invalid")
    user.set_unusable_password()
    user.save(update_fields=["password"])
    return Reader.objects.create(user=user, code=code, active=False)


def annotations_import(
    *, project: Project, fmt: str, text: str | None = None,
    files: dict[str, str] | None = None, reader: str | None = None, actor: Any = None,
    run_consensus: bool = True,
) -> dict[str, Any]:
    """Import one file (``text``) or several (``files``: path -> text, e.g. VOC)."""
    importer = registry.get_importer(fmt)
    if files is None:
        files = {f"import.{fmt}": text or ""}
    reads = importer(files, project_taxonomy(project), reader=reader,
                     records=image_records(project) if fmt == "yolo" else None)
    images = _resolve_images(project, reads)
    created = unchanged = 0
    with transaction.atomic():
        for image_reads in reads:
            image = images[image_reads.image_id]
            for read in image_reads.reads:
                boxes = [BoxIn(int(c), *map(float, b))
                         for b, c in zip(read.boxes, read.classes, strict=True)]
                _, new = reader_annotation_record(
                    image=image, reader=_reader(read.reader), boxes=boxes,
                    image_labels=sorted(read.image_labels),
                    source=ReaderAnnotation.Source.IMPORT, actor=actor,
                    trigger_consensus=False,
                )
                created += int(new)
                unchanged += int(not new)
        summary = {"format": fmt, "images": len(reads), "annotations_created": created,
                   "annotations_unchanged": unchanged}
        audit_record(action="annotations.import", actor=actor, project=project, detail=summary)
        if run_consensus and created:
            run = consensus_run_create(project=project, trigger=ConsensusRun.Trigger.IMPORT,
                                       actor=actor)
            summary["consensus_run"] = run.pk
    return summary
