"""Flat (struct-of-arrays) view of a set of ``ImageReads``, in canonical order.

Strategies work on whole sets at once with numpy, so the nested input is
flattened once: one row per box, one row per read.  The order is canonical,
which is what makes every strategy deterministic regardless of input order:

* images sorted by ``image_id``;
* reads within an image sorted by reader code (this is also the "model" order
  handed to weighted boxes fusion);
* boxes within a read sorted by (class, x_min, y_min, x_max, y_max).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from annotations.consensus.types import ImageReads, ReaderRead
from annotations.errors import DomainError


@dataclass(frozen=True, eq=False)
class FlatReads:
    image_ids: list[str]
    widths: np.ndarray  # (I,) nan when unknown
    heights: np.ndarray  # (I,)
    readers: list[str]  # all reader codes, sorted
    # one row per read
    read_image: np.ndarray  # (R,) image index
    read_reader: np.ndarray  # (R,) reader index into ``readers``
    read_model: np.ndarray  # (R,) position of the read within its image
    read_labels: list[frozenset[str]]
    image_read_start: np.ndarray  # (I+1,) reads of image i are [start[i], start[i+1])
    # one row per box
    box_image: np.ndarray  # (B,)
    box_read: np.ndarray  # (B,)
    box_reader: np.ndarray  # (B,)
    box_model: np.ndarray  # (B,)
    box_class: np.ndarray  # (B,) int64
    boxes: np.ndarray  # (B, 4) float64 pixels

    @property
    def n_images(self) -> int:
        return len(self.image_ids)

    def reads_per_image(self) -> np.ndarray:
        return np.diff(self.image_read_start)

    @classmethod
    def build(cls, images: Sequence[ImageReads]) -> FlatReads:
        order = sorted(range(len(images)), key=lambda i: images[i].image_id)
        ids = [images[i].image_id for i in order]
        if len(set(ids)) != len(ids):
            raise DomainError("invalid_reads", "an image_id appears twice in the set")
        readers = sorted({r.reader for im in images for r in im.reads})
        reader_index = {code: k for k, code in enumerate(readers)}
        widths = np.array([_size(images[i].width) for i in order], dtype=np.float64)
        heights = np.array([_size(images[i].height) for i in order], dtype=np.float64)

        read_image: list[int] = []
        read_reader: list[int] = []
        read_model: list[int] = []
        read_labels: list[frozenset[str]] = []
        starts = [0]
        box_parts: list[np.ndarray] = []
        cls_parts: list[np.ndarray] = []
        counts: list[int] = []
        for ii, i in enumerate(order):
            reads = images[i].reads
            if len(reads) > 1:
                reads = sorted(reads, key=_reader_code)
            t = 0
            for read in reads:
                read_image.append(ii)
                read_reader.append(reader_index[read.reader])
                read_model.append(t)
                read_labels.append(read.image_labels)
                n_boxes = len(read.classes)
                counts.append(n_boxes)
                if n_boxes:
                    box_parts.append(read.boxes)
                    cls_parts.append(read.classes)
                t += 1
            starts.append(len(read_image))

        n_reads = len(read_image)
        read_image_a = np.array(read_image, dtype=np.int64)
        read_reader_a = np.array(read_reader, dtype=np.int64)
        read_model_a = np.array(read_model, dtype=np.int64)
        counts_a = np.array(counts, dtype=np.int64)
        box_read = np.repeat(np.arange(n_reads, dtype=np.int64), counts_a)
        if box_parts:
            boxes = np.concatenate(box_parts).astype(np.float64, copy=False)
            box_class = np.concatenate(cls_parts).astype(np.int64, copy=False)
        else:
            boxes = np.zeros((0, 4))
            box_class = np.zeros(0, dtype=np.int64)
        # canonical order of boxes within each read
        perm = np.lexsort(
            (boxes[:, 3], boxes[:, 2], boxes[:, 1], boxes[:, 0], box_class, box_read)
        )
        boxes, box_class = boxes[perm], box_class[perm]
        return cls(
            image_ids=ids,
            widths=widths,
            heights=heights,
            readers=readers,
            read_image=read_image_a,
            read_reader=read_reader_a,
            read_model=read_model_a,
            read_labels=read_labels,
            image_read_start=np.array(starts, dtype=np.int64),
            box_image=read_image_a[box_read],
            box_read=box_read,
            box_reader=read_reader_a[box_read],
            box_model=read_model_a[box_read],
            box_class=box_class,
            boxes=boxes,
        )

    def image_scale(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-image (sx, sy) dividing pixel coordinates into [0, 1].

        Known ``width``/``height`` are used as such.  The VinBigData CSV has no
        image sizes, so otherwise both axes are divided by the image's largest
        box coordinate rounded up to an integer pixel (at least 1): every box
        then lies in [0, 1] and nothing is clipped.  IoU and weighted means are
        invariant to per-axis scaling, so this choice changes no clustering;
        it only fixes the normalised numbers both WBF implementations see.
        """
        n = self.n_images
        maxc = np.ones(n, dtype=np.float64)
        if len(self.boxes):
            np.maximum.at(maxc, self.box_image, self.boxes.max(axis=1))
        fallback = np.maximum(np.ceil(maxc), 1.0)
        sx = np.where(np.isnan(self.widths), fallback, self.widths)
        sy = np.where(np.isnan(self.heights), fallback, self.heights)
        return sx, sy


def _reader_code(read: ReaderRead) -> str:
    return read.reader


def _size(value: float | None) -> float:
    if value is None:
        return float("nan")
    v = float(value)
    if not v > 0:
        raise DomainError("invalid_reads", f"image size must be > 0, got {value!r}")
    return v
