"""Exports of masks: COCO (RLE), PNG masks, DICOM Segmentation.

The masks are the final masks (the adjudicator's where an adjudication painted any,
else the latest consensus masks: what training uses), or one consensus run's masks with
``run``, in original pixels.  DICOM SEG objects reference the de-identified DICOM the
platform stores for each film; films that came in as PNG have no DICOM to reference and
are listed in ``skipped.json`` instead of silently left out.  Every format reads one
film's masks at a time (archives are written to a temporary file member by member; the
finished file is returned in one piece, like the other exports).
"""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from typing import Any

import pydicom

from annotations.errors import DomainError
from annotations.formats.dicom_seg import build_segmentation
from annotations.formats.mask_formats import png_mask, write_coco_masks
from annotations.formats.records import ImageRecord
from annotations.models import Adjudication, ConsensusMask, ConsensusRun, Image, Project
from annotations.services import storage
from annotations.services.audit import audit_record
from annotations.services.exports import ExportFile, project_mask_classes
from annotations.services.segmenter_training import final_masks
from annotations.services.storage import mask_read
from annotations.taxonomy import mask_code

MASK_FORMATS = ("coco", "png", "dicom_seg")


def _selected(project: Project, run_id: int | None
              ) -> tuple[list[Image], dict[str, dict[str, str]], dict[str, str]]:
    """(images, {pseudo id: {class: path}}, {pseudo id: algorithm}) to export."""
    if run_id is None:
        masks = final_masks(project)
        decided = {a.image.pseudo_id for a in Adjudication.objects.filter(
            project=project, status=Adjudication.Status.DONE).select_related("image")}
        method = {pid: "manual" if pid in decided else "consensus" for pid in masks}
    else:
        run = project.consensus_runs.filter(pk=run_id, status=ConsensusRun.Status.DONE).first()
        if run is None:
            raise DomainError("not_found", "no finished consensus run with that id")
        masks, method = {}, {}
        for m in (ConsensusMask.objects.filter(consensus_image__run=run)
                  .select_related("consensus_image__image", "mask_class")):
            pid = m.consensus_image.image.pseudo_id
            masks.setdefault(pid, {})[m.mask_class.name] = m.path
            method[pid] = m.meta.get("method", "consensus")
    if not masks:
        raise DomainError("not_found", "no masks to export (no finished consensus run "
                          "merged any)")
    images = list(Image.objects.filter(project=project, pseudo_id__in=list(masks))
                  .order_by("pseudo_id"))
    return images, masks, method


def masks_export(*, project: Project, fmt: str, run_id: int | None = None,
                 actor: Any = None) -> ExportFile:
    if fmt not in MASK_FORMATS:
        raise DomainError("invalid", f"mask export format must be one of {list(MASK_FORMATS)}")
    images, masks, method = _selected(project, run_id)
    classes = project_mask_classes(project)
    stem = f"{project.slug}-masks-{fmt}"
    if fmt == "coco":
        films = ((ImageRecord(image_id=i.pseudo_id, file_name=f"{i.pseudo_id}.png",
                              width=i.width, height=i.height),
                  {n: mask_read(p) for n, p in masks[i.pseudo_id].items()}) for i in images)
        out = ExportFile(write_coco_masks(films, classes).encode(), "application/json",
                         f"{stem}.json")
    else:
        out = _archive(images, masks, method, classes, fmt, stem)
    audit_record(action="masks.export", actor=actor, project=project,
                 detail={"format": fmt, "run": run_id, "images": len(images)})
    return out


def _archive(images, masks, method, classes, fmt: str, stem: str) -> ExportFile:
    skipped = []
    with tempfile.TemporaryFile() as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("classes.json", json.dumps(
                [{"index": c.index, "name": c.name, "code": c.code, "anatomy": c.anatomy}
                 for c in classes], indent=1))
            for image in images:
                paths = masks[image.pseudo_id]
                if fmt == "png":
                    for name, path in sorted(paths.items()):
                        zf.writestr(f"{image.pseudo_id}/{mask_code(name)}.png",
                                    png_mask(mask_read(path)))
                    continue
                if not image.dicom_path or not storage.exists(storage.MEDIA, image.dicom_path):
                    skipped.append({"image": image.pseudo_id, "reason": "no DICOM source"})
                    continue
                source = pydicom.dcmread(str(storage.local_path(storage.MEDIA,
                                                                image.dicom_path)))
                seg = build_segmentation(source, {n: mask_read(p) for n, p in paths.items()},
                                         classes, algorithm=method[image.pseudo_id])
                buf = io.BytesIO()
                seg.save_as(buf)
                zf.writestr(f"{image.pseudo_id}.seg.dcm", buf.getvalue())
            if skipped:
                zf.writestr("skipped.json", json.dumps(skipped, indent=1))
        tmp.seek(0)
        data = tmp.read()
    return ExportFile(data, "application/zip", f"{stem}.zip")
