"""Exports of final labels, a consensus run, or every reader's reads, in any
format of the pure ``formats`` registry (COCO, VinBigData CSV, YOLO, VOC).

Images are named by their pseudonymous id (``<id>.png`` as file name); nothing
exported carries identity.  A format that writes one file is returned as that
file; one that writes several (YOLO, VOC) as a zip.

``annotations_export_stream`` is what the API serves: a format that can be written
chunk by chunk (COCO) is read and written ``CHUNK_IMAGES`` images at a time, so a
100,000-image project is exported holding one chunk, from one consistent snapshot of
the database, into a temporary file that is then streamed; the others are built whole.
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction

from annotations.errors import DomainError
from annotations.formats import registry
from annotations.formats.records import ImageRecord
from annotations.models import ConsensusRun, Image, LabelClass, MaskClass, Project
from annotations.services.audit import audit_record
from annotations.services.consensus import (
    consensus_results,
    latest_run,
    reads_from_annotations,
    usable_annotations,
)
from annotations.services.labels import final_results
from annotations.taxonomy import LabelClassSpec, MaskClassSpec

SOURCES = ("final", "consensus", "readers")
#: Images read and written at a time by a streamed export (its memory: one chunk's
#: rows and boxes).
CHUNK_IMAGES = 500
CONTENT_TYPES = {".json": "application/json", ".csv": "text/csv", ".txt": "text/plain",
                 ".xml": "application/xml"}


@dataclass
class ExportFile:
    content: bytes
    content_type: str
    filename: str


def project_taxonomy(project: Project) -> list[LabelClassSpec]:
    return [LabelClassSpec(lc.class_id, lc.name, lc.code, lc.color, lc.image_level)
            for lc in LabelClass.objects.filter(project=project).order_by("class_id")]


def project_mask_classes(project: Project) -> list[MaskClassSpec]:
    return [MaskClassSpec(mc.index, mc.name, mc.code, mc.color, mc.anatomy)
            for mc in MaskClass.objects.filter(project=project).order_by("index")]


def image_records(project: Project) -> list[ImageRecord]:
    return [ImageRecord(image_id=i.pseudo_id, file_name=f"{i.pseudo_id}.png", width=i.width,
                        height=i.height) for i in project.images.order_by("pseudo_id")]


def _run(project: Project, source: str, run_id: int | None) -> ConsensusRun | None:
    if source not in SOURCES:
        raise DomainError("invalid", f"source must be one of {list(SOURCES)}")
    if source != "consensus":
        return None
    run = (project.consensus_runs.filter(pk=run_id).first() if run_id
           else latest_run(project))
    if run is None or run.status != ConsensusRun.Status.DONE:
        raise DomainError("not_found", "no finished consensus run to export")
    return run


def _source_data(project: Project, source: str, run: ConsensusRun | None,
                 images: list[int] | None = None):
    """The boxes to export: final labels, a run's, or every current read (of the
    images with these pks only, when given)."""
    if source == "final":
        return final_results(project, images)
    if source == "consensus":
        return consensus_results(run, images)
    return reads_from_annotations(list(usable_annotations(project, images)))


def _package(files: dict[str, str], stem: str) -> ExportFile:
    if len(files) == 1:
        path, text = next(iter(files.items()))
        suffix = path[path.rfind("."):]
        return ExportFile(text.encode(), CONTENT_TYPES.get(suffix, "text/plain"),
                          f"{stem}{suffix}")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(files):
            zf.writestr(path, files[path])
    return ExportFile(buf.getvalue(), "application/zip", f"{stem}.zip")


def annotations_export(*, project: Project, fmt: str, source: str = "final",
                       run_id: int | None = None, reader: str | None = None,
                       actor: Any = None) -> ExportFile:
    exporter = registry.get_exporter(fmt)
    run = _run(project, source, run_id)
    data = _source_data(project, source, run)
    records = image_records(project)
    if source != "readers":
        keep = set(data)
        records = [r for r in records if r.image_id in keep]
    files = exporter(records, data, project_taxonomy(project), reader=reader)
    audit_record(action="annotations.export", actor=actor, project=project,
                 detail={"format": fmt, "source": source, "run": run.pk if run else None})
    return _package(files, f"{project.slug}-{source}-{fmt}")


@dataclass
class ExportStream:
    chunks: Iterator[bytes]
    content_type: str
    filename: str


def _image_chunks(project: Project, size: int) -> Iterator[list[tuple[int, str, int, int]]]:
    """The project's images in file order (pseudo id), ``size`` at a time, as (pk,
    pseudo id, width, height): keyset pages, so each chunk is one indexed range read
    however deep into the project, and tuples, not deferred-field instances (each of
    those would reload itself to attach the project)."""
    last = ""
    while True:
        chunk = list(Image.objects.filter(project=project, pseudo_id__gt=last)
                     .order_by("pseudo_id")
                     .values_list("pk", "pseudo_id", "width", "height")[:size])
        if not chunk:
            return
        yield chunk
        last = chunk[-1][1]


def _source_chunks(project: Project, source: str, run: ConsensusRun | None, size: int):
    for images in _image_chunks(project, size):
        data = _source_data(project, source, run, [pk for pk, *_ in images])
        yield [ImageRecord(image_id=pseudo, file_name=f"{pseudo}.png", width=width,
                           height=height) for _, pseudo, width, height in images
               if source == "readers" or pseudo in data], data


@contextmanager
def _snapshot():
    """One read-only REPEATABLE READ transaction around a streamed export, so its
    chunks all see the database as it was at the first (a consensus run finishing
    mid-export shows in none of them, not in the later half).  Inside a transaction
    already (a test, a caller's atomic block), that transaction is the snapshot."""
    if connection.in_atomic_block or connection.vendor != "postgresql":
        yield
        return
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        yield


#: What a built export keeps in memory before spilling to a temporary file.
SPOOL_BYTES = 1 << 20


def annotations_export_stream(*, project: Project, fmt: str, source: str = "final",
                              run_id: int | None = None, reader: str | None = None,
                              actor: Any = None, chunk_images: int = CHUNK_IMAGES
                              ) -> ExportStream:
    """``annotations_export`` as a stream of bytes, holding one chunk of the project
    in memory where the format can be written chunk by chunk (COCO), else the whole
    file as one chunk.

    The file is written completely (to a temporary file past ``SPOOL_BYTES``) before
    the first byte is sent: bad arguments and bad data (a box outside its image)
    are a clean error with every problem listed, never a cut-off download, and the
    audit records finished exports only.
    """
    streamed = registry.get_stream_exporter(fmt)
    if streamed is None:
        whole = annotations_export(project=project, fmt=fmt, source=source, run_id=run_id,
                                   reader=reader, actor=actor)
        return ExportStream(iter([whole.content]), whole.content_type, whole.filename)
    file_name, writer = streamed
    run = _run(project, source, run_id)
    taxonomy = project_taxonomy(project)
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
    try:
        with _snapshot():
            for text in writer(_source_chunks(project, source, run, chunk_images),
                               taxonomy, reader=reader):
                spool.write(text.encode())
    except BaseException:
        spool.close()
        raise
    audit_record(action="annotations.export", actor=actor, project=project,
                 detail={"format": fmt, "source": source, "run": run.pk if run else None,
                         "bytes": spool.tell()})
    spool.seek(0)

    def body() -> Iterator[bytes]:
        with spool:
            while block := spool.read(1 << 16):
                yield block

    suffix = file_name[file_name.rfind("."):]
    return ExportStream(body(), CONTENT_TYPES.get(suffix, "text/plain"),
                        f"{project.slug}-{source}-{fmt}{suffix}")
