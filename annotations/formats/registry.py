"""Formats by name, so callers (the Django layer) pick one without if/elif.

Call contract -- every entry has the same shape, whatever the format:

* exporter: ``EXPORTERS[name](records, source, taxonomy, *, reader=None)
  -> dict[str, str]``: relative file path -> file text, for the caller to
  write or zip.  ``records`` are the images to export (sizes, file names),
  ``source`` a ``Mapping[image_id, ConsensusResult]`` or a
  ``Sequence[ImageReads]``, ``reader`` picks one reader from reads (None:
  all; ignored for a consensus);
* stream exporter (where a format has one): ``STREAM_EXPORTERS[name] = (file name,
  writer)``, ``writer(chunks, taxonomy, *, reader=None) -> Iterator[str]``: the same
  single file as the exporter, written from ``(records, source)`` chunks so that a
  project of any size is exported holding one chunk;
* importer: ``IMPORTERS[name](files, taxonomy, *, reader=None, records=None)
  -> list[ImageReads]``: ``files`` maps path -> text (single-file formats
  take exactly one file), ``reader`` overrides the format's default reader
  code where the format has none of its own, ``records`` gives image sizes
  (required by YOLO, optional for VOC, unused by the others).

Every failure is a ``DomainError``: ``unknown_format`` for a name not
registered, ``invalid_export`` / ``invalid_<format>`` from the formats.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Protocol, TypeVar

from annotations.consensus.types import ImageReads
from annotations.errors import DomainError
from annotations.formats import coco, nih, vinbigdata, voc, yolo
from annotations.formats.common import box_classes
from annotations.formats.records import BoxSource, ImageRecord, collect_reads
from annotations.taxonomy import NO_FINDING, LabelClassSpec


class Exporter(Protocol):
    def __call__(
        self,
        records: Sequence[ImageRecord],
        source: BoxSource,
        taxonomy: Sequence[LabelClassSpec],
        *,
        reader: str | None = None,
    ) -> dict[str, str]: ...


class Importer(Protocol):
    def __call__(
        self,
        files: Mapping[str, str],
        taxonomy: Sequence[LabelClassSpec],
        *,
        reader: str | None = None,
        records: Sequence[ImageRecord] | None = None,
    ) -> list[ImageReads]: ...


class StreamExporter(Protocol):
    def __call__(
        self,
        chunks: Iterable[tuple[Sequence[ImageRecord], BoxSource]],
        taxonomy: Sequence[LabelClassSpec],
        *,
        reader: str | None = None,
    ) -> Iterator[str]: ...


EXPORTERS: dict[str, Exporter] = {}
STREAM_EXPORTERS: dict[str, tuple[str, StreamExporter]] = {}
IMPORTERS: dict[str, Importer] = {}

_E = TypeVar("_E", bound=Callable[..., dict[str, str]])
_I = TypeVar("_I", bound=Callable[..., list[ImageReads]])


def register_exporter(name: str) -> Callable[[_E], _E]:
    """Decorator: register an exporter under ``name`` (names are unique)."""

    def deco(fn: _E) -> _E:
        if name in EXPORTERS:
            raise ValueError(f"exporter {name!r} is already registered")
        EXPORTERS[name] = fn
        return fn

    return deco


def register_importer(name: str) -> Callable[[_I], _I]:
    """Decorator: register an importer under ``name`` (names are unique)."""

    def deco(fn: _I) -> _I:
        if name in IMPORTERS:
            raise ValueError(f"importer {name!r} is already registered")
        IMPORTERS[name] = fn
        return fn

    return deco


def get_exporter(name: str) -> Exporter:
    try:
        return EXPORTERS[name]
    except KeyError as exc:
        raise DomainError(
            "unknown_format", f"no exporter for format {name!r}", detail=sorted(EXPORTERS)
        ) from exc


def get_importer(name: str) -> Importer:
    try:
        return IMPORTERS[name]
    except KeyError as exc:
        raise DomainError(
            "unknown_format", f"no importer for format {name!r}", detail=sorted(IMPORTERS)
        ) from exc


def format_guess(name: str, text: str) -> str:
    """The import format a file is in, from its name and first bytes; DomainError if unsure.

    ``.json`` with COCO's top-level keys is COCO, ``.xml`` is Pascal VOC, a CSV whose header
    names VinBigData's or the NIH box list's columns is that format.  Anything else asks
    for ``--format`` rather than guessing.
    """
    head = text.lstrip("\ufeff \t\r\n")[:4096]
    lower = name.lower()
    first_line = head.splitlines()[0] if head else ""
    if lower.endswith(".json") or head.startswith("{"):
        if all(k in head for k in ('"images"', '"annotations"')):
            return "coco"
    elif lower.endswith(".xml") or head.startswith("<"):
        return "voc"
    elif "rad_id" in first_line and "class_name" in first_line:
        return "vinbigdata"
    elif "Image Index" in first_line and "Finding Label" in first_line:
        return "nih"
    raise DomainError("unknown_format",
                      f"cannot tell the format of {name}: pass --format",
                      detail=sorted(IMPORTERS))


def _single_file(files: Mapping[str, str], fmt: str) -> str:
    if len(files) != 1:
        raise DomainError(
            f"invalid_{fmt}", f"{fmt} import takes exactly one file, got {len(files)}",
            detail=sorted(files),
        )
    return next(iter(files.values()))


# --- COCO -------------------------------------------------------------------

COCO_FILE = "annotations.json"


@register_exporter("coco")
def _export_coco(records, source, taxonomy, *, reader=None):
    return {COCO_FILE: coco.write_coco(records, source, taxonomy, reader=reader)}


STREAM_EXPORTERS["coco"] = (COCO_FILE, coco.stream_coco)


def get_stream_exporter(name: str) -> tuple[str, StreamExporter] | None:
    """``(file name, writer)`` of a format that can be written chunk by chunk, else None
    (the format is then built whole: ``get_exporter``)."""
    get_exporter(name)  # an unknown name is an error, not "not streamed"
    return STREAM_EXPORTERS.get(name)


@register_importer("coco")
def _import_coco(files, taxonomy, *, reader=None, records=None):
    return coco.parse_coco(
        _single_file(files, "coco"), taxonomy, reader=reader or coco.DEFAULT_READER
    )


# --- YOLO -------------------------------------------------------------------


@register_exporter("yolo")
def _export_yolo(records, source, taxonomy, *, reader=None):
    return yolo.write_yolo(records, source, taxonomy, reader=reader)


@register_importer("yolo")
def _import_yolo(files, taxonomy, *, reader=None, records=None):
    if records is None:
        raise DomainError("invalid_yolo", "YOLO import needs the image records (sizes)")
    return yolo.parse_yolo(files, records, taxonomy, reader=reader or yolo.DEFAULT_READER)


# --- Pascal VOC -------------------------------------------------------------


@register_exporter("voc")
def _export_voc(records, source, taxonomy, *, reader=None):
    return voc.write_voc(records, source, taxonomy, reader=reader)


@register_importer("voc")
def _import_voc(files, taxonomy, *, reader=None, records=None):
    return voc.parse_voc(
        files, taxonomy, reader=reader or voc.DEFAULT_READER, records=records
    )


# --- VinBigData CSV (wraps vinbigdata.py unchanged) ---------------------------

VINBIGDATA_FILE = "annotations.csv"


def vinbigdata_class_names(taxonomy: Sequence[LabelClassSpec]) -> list[str]:
    """The ``class_names`` list vinbigdata.py expects: box classes 0..n-1, No finding = n."""
    specs = box_classes(taxonomy)
    if [s.class_id for s in specs] != list(range(len(specs))):
        raise DomainError(
            "invalid_taxonomy", "the VinBigData CSV needs box class ids 0..n-1 without gaps"
        )
    nf = [s.class_id for s in taxonomy if s.image_level and s.name == NO_FINDING]
    if nf and nf != [len(specs)]:
        raise DomainError(
            "invalid_taxonomy", f"the VinBigData CSV needs 'No finding' to have id {len(specs)}"
        )
    return [s.name for s in specs]


@register_exporter("vinbigdata")
def _export_vinbigdata(records, source, taxonomy, *, reader=None):
    """The CSV carries no sizes: ``records`` only validate the source (every image
    known, boxes inside, classes in the taxonomy); images without reads get no row,
    and the rows are exactly what ``vinbigdata.write_*`` writes."""
    names = vinbigdata_class_names(taxonomy)
    collect_reads(records, source, taxonomy, reader=reader)
    if isinstance(source, Mapping):
        text = vinbigdata.write_consensus_csv(source, names)
    else:
        if reader is not None:
            source = [
                ImageReads(im.image_id, im.width, im.height,
                           [r for r in im.reads if r.reader == reader])
                for im in source
            ]
        text = vinbigdata.write_csv(source, names)
    return {VINBIGDATA_FILE: text}


@register_importer("vinbigdata")
def _import_vinbigdata(files, taxonomy, *, reader=None, records=None):
    """``rad_id`` is the reader code; ``reader`` and ``records`` are not used."""
    return vinbigdata.parse_csv(_single_file(files, "csv"), vinbigdata_class_names(taxonomy))


# --- NIH box list (import only) ---------------------------------------------


@register_importer("nih")
def _import_nih(files, taxonomy, *, reader=None, records=None):
    """Class names come from the taxonomy (box classes in class id order)."""
    return nih.parse_nih_csv(
        _single_file(files, "csv"),
        reader=reader or nih.DEFAULT_READER,
        class_names=vinbigdata_class_names(taxonomy),
    )
