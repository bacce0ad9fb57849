"""Exports of reads or consensus in the formats training and other tools read.

Images are named by their pseudonymous id; nothing exported carries identity.
Formats register here by name (``register_exporter``); each takes an
``ExportContext`` and returns an ``ExportFile``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from annotations.consensus import ConsensusResult, ImageReads
from annotations.errors import DomainError
from annotations.formats import vinbigdata
from annotations.models import ConsensusRun, Image, LabelClass, Project
from annotations.services.audit import audit_record
from annotations.services.consensus import (
    consensus_results,
    latest_run,
    reads_from_annotations,
    usable_annotations,
)
from annotations.services.labels import final_results


@dataclass
class ExportFile:
    content: bytes
    content_type: str
    filename: str


@dataclass
class ExportContext:
    project: Project
    source: str  # "final", "consensus" or "readers"
    class_names: list[str]
    images: list[Image]
    reads: list[ImageReads] = field(default_factory=list)
    consensus: dict[str, ConsensusResult] = field(default_factory=dict)
    run: ConsensusRun | None = None


Exporter = Callable[[ExportContext], ExportFile]
EXPORTERS: dict[str, Exporter] = {}


def register_exporter(name: str) -> Callable[[Exporter], Exporter]:
    def wrap(fn: Exporter) -> Exporter:
        EXPORTERS[name] = fn
        return fn
    return wrap


@register_exporter("vinbigdata")
def _vinbigdata(ctx: ExportContext) -> ExportFile:
    if ctx.source != "readers":
        text = vinbigdata.write_consensus_csv(ctx.consensus, ctx.class_names)
    else:
        text = vinbigdata.write_csv(ctx.reads, ctx.class_names)
    return ExportFile(text.encode(), "text/csv",
                      f"{ctx.project.slug}-{ctx.source}-vinbigdata.csv")


def annotations_export(*, project: Project, fmt: str, source: str = "final",
                       run_id: int | None = None, actor: Any = None) -> ExportFile:
    exporter = EXPORTERS.get(fmt)
    if exporter is None:
        raise DomainError("unknown_format", f"unknown export format {fmt!r}",
                          detail=sorted(EXPORTERS))
    if source not in ("final", "consensus", "readers"):
        raise DomainError("invalid", "source must be 'final', 'consensus' or 'readers'")
    ctx = ExportContext(
        project=project, source=source,
        class_names=list(LabelClass.objects.filter(project=project, image_level=False)
                         .order_by("class_id").values_list("name", flat=True)),
        images=list(project.images.order_by("pseudo_id")),
    )
    if source == "final":
        ctx.consensus = final_results(project)
    elif source == "consensus":
        run = (project.consensus_runs.filter(pk=run_id).first() if run_id
               else latest_run(project))
        if run is None or run.status != ConsensusRun.Status.DONE:
            raise DomainError("not_found", "no finished consensus run to export")
        ctx.run, ctx.consensus = run, consensus_results(run)
    else:
        ctx.reads = reads_from_annotations(list(usable_annotations(project)))
    out = exporter(ctx)
    audit_record(action="annotations.export", actor=actor, project=project,
                 detail={"format": fmt, "source": source,
                         "run": ctx.run.pk if ctx.run else None})
    return out
