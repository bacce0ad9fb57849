"""Exports of final labels, a consensus run, or every reader's reads, in any
format of the pure ``formats`` registry (COCO, VinBigData CSV, YOLO, VOC).

Images are named by their pseudonymous id (``<id>.png`` as file name); nothing
exported carries identity.  A format that writes one file is returned as that
file; one that writes several (YOLO, VOC) as a zip.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from typing import Any

from annotations.errors import DomainError
from annotations.formats import registry
from annotations.formats.records import ImageRecord
from annotations.models import ConsensusRun, LabelClass, MaskClass, Project
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


def _source_data(project: Project, source: str, run_id: int | None):
    if source == "final":
        return final_results(project), None
    if source == "consensus":
        run = (project.consensus_runs.filter(pk=run_id).first() if run_id
               else latest_run(project))
        if run is None or run.status != ConsensusRun.Status.DONE:
            raise DomainError("not_found", "no finished consensus run to export")
        return consensus_results(run), run
    return reads_from_annotations(list(usable_annotations(project))), None


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
    if source not in SOURCES:
        raise DomainError("invalid", f"source must be one of {list(SOURCES)}")
    data, run = _source_data(project, source, run_id)
    records = image_records(project)
    if source != "readers":
        keep = set(data)
        records = [r for r in records if r.image_id in keep]
    files = exporter(records, data, project_taxonomy(project), reader=reader)
    audit_record(action="annotations.export", actor=actor, project=project,
                 detail={"format": fmt, "source": source, "run": run.pk if run else None})
    return _package(files, f"{project.slug}-{source}-{fmt}")
