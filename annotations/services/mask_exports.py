"""Exports of a consensus run's masks: COCO (RLE), PNG masks, DICOM Segmentation.

The masks are the run's consensus masks (the latest finished run by default), in original
pixels.  DICOM SEG objects reference the de-identified DICOM the platform stores for each
film; films that came in as PNG have no DICOM to reference and are listed in
``skipped.json`` instead of silently left out.  Archives are written to a temporary file
member by member, so only one film's masks are expanded at a time (the finished
archive is returned in one piece, like the other exports).
"""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from collections import defaultdict
from typing import Any

import pydicom

from annotations.errors import DomainError
from annotations.formats.dicom_seg import build_segmentation
from annotations.formats.mask_formats import png_mask, write_coco_masks
from annotations.formats.records import ImageRecord
from annotations.models import ConsensusMask, ConsensusRun, Project
from annotations.services.audit import audit_record
from annotations.services.exports import ExportFile, project_mask_classes
from annotations.services.storage import mask_read, media_path

MASK_FORMATS = ("coco", "png", "dicom_seg")


def _run(project: Project, run_id: int | None) -> ConsensusRun:
    runs = project.consensus_runs.filter(status=ConsensusRun.Status.DONE)
    run = runs.filter(pk=run_id).first() if run_id else \
        runs.filter(images__masks__isnull=False).distinct().order_by("-id").first()
    if run is None:
        raise DomainError("not_found", "no finished consensus run with masks to export")
    return run


def _rows(run: ConsensusRun) -> dict[Any, list[ConsensusMask]]:
    by_image: dict[Any, list[ConsensusMask]] = defaultdict(list)
    for m in (ConsensusMask.objects.filter(consensus_image__run=run)
              .select_related("consensus_image__image", "mask_class")
              .order_by("consensus_image__image__pseudo_id", "mask_class__index")):
        by_image[m.consensus_image.image].append(m)
    return by_image


def masks_export(*, project: Project, fmt: str, run_id: int | None = None,
                 actor: Any = None) -> ExportFile:
    if fmt not in MASK_FORMATS:
        raise DomainError("invalid", f"mask export format must be one of {list(MASK_FORMATS)}")
    run = _run(project, run_id)
    classes = project_mask_classes(project)
    by_image = _rows(run)
    stem = f"{project.slug}-masks-{fmt}"
    if fmt == "coco":
        records = [ImageRecord(image_id=i.pseudo_id, file_name=f"{i.pseudo_id}.png",
                               width=i.width, height=i.height) for i in by_image]
        masks = {i.pseudo_id: {m.mask_class.name: mask_read(m.path) for m in rows}
                 for i, rows in by_image.items()}
        out = ExportFile(write_coco_masks(records, masks, classes).encode(),
                         "application/json", f"{stem}.json")
    else:
        out = _archive(by_image, classes, fmt, run, stem)
    audit_record(action="masks.export", actor=actor, project=project,
                 detail={"format": fmt, "run": run.pk, "images": len(by_image)})
    return out


def _archive(by_image, classes, fmt: str, run: ConsensusRun, stem: str) -> ExportFile:
    skipped = []
    with tempfile.TemporaryFile() as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("classes.json", json.dumps(
                [{"index": c.index, "name": c.name, "code": c.code, "anatomy": c.anatomy}
                 for c in classes], indent=1))
            for image, rows in by_image.items():
                if fmt == "png":
                    for m in rows:
                        zf.writestr(f"{image.pseudo_id}/{m.mask_class.code}.png",
                                    png_mask(mask_read(m.path)))
                    continue
                if not image.dicom_path or not media_path(image.dicom_path).exists():
                    skipped.append({"image": image.pseudo_id, "reason": "no DICOM source"})
                    continue
                source = pydicom.dcmread(str(media_path(image.dicom_path)))
                masks = {m.mask_class.name: mask_read(m.path) for m in rows}
                seg = build_segmentation(source, masks, classes,
                                         algorithm=rows[0].meta.get("method", "consensus"))
                buf = io.BytesIO()
                seg.save_as(buf)
                zf.writestr(f"{image.pseudo_id}.seg.dcm", buf.getvalue())
            if skipped:
                zf.writestr("skipped.json", json.dumps(skipped, indent=1))
        tmp.seek(0)
        data = tmp.read()
    return ExportFile(data, "application/zip", f"{stem}.zip")
