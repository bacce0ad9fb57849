"""``reader_priority``: trust one reader, in a stated order of preference.

The classic VinBigData recipe ("use R9's boxes, else R10's, else R8's"): for
each image the first listed reader who read it decides, and their read is the
consensus as is (scores 1.0).  Images that none of the listed readers read
go to the ``fallback`` strategy (``{"strategy": name, "params": {...}}``),
run on just those images; without a fallback they get an empty,
undetermined result (no boxes, no labels, ``meta["undecided"] = True``).

A chosen reader who said "No finding" gives a "No finding" image (the shared
rule in ``image_labels``), exactly as their read says.  Image-level findings
(``image_findings``) are decided over all the image's readers like every other
strategy's (``image_method``, default ``majority``): the priority order is about
whose boxes to trust.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from annotations.consensus.assemble import assemble
from annotations.consensus.flat import FlatReads
from annotations.consensus.params import invalid
from annotations.consensus.registry import Strategy, build, register
from annotations.consensus.types import ConsensusResult, ImageReads, empty_result
from annotations.errors import DomainError
from annotations.params import refuse_unknown


@register("reader_priority")
class ReaderPriority(Strategy):
    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        super().__init__(params)
        params = dict(params or {})
        readers = params.pop("readers", None)
        if (
            not isinstance(readers, list)
            or not readers
            or not all(isinstance(r, str) and r for r in readers)
        ):
            raise invalid("reader_priority", "readers", "must be a non-empty list of reader codes")
        if len(set(readers)) != len(readers):
            raise invalid("reader_priority", "readers", "a reader is listed twice")
        self.readers: list[str] = readers
        fallback = params.pop("fallback", None)
        self.fallback: Strategy | None = None
        if fallback is not None:
            if not isinstance(fallback, Mapping) or set(fallback) - {"strategy", "params"}:
                raise invalid(
                    "reader_priority", "fallback", 'must be {"strategy": name, "params": {...}}'
                )
            try:
                self.fallback = build(str(fallback.get("strategy")), fallback.get("params") or {})
            except DomainError as exc:
                raise invalid("reader_priority", "fallback", exc.message) from exc
        refuse_unknown("reader_priority", params, {"readers", "fallback"})

    def run_boxes(self, images: Sequence[ImageReads]) -> dict[str, ConsensusResult]:
        flat = FlatReads.build(images)
        rank_of = {code: k for k, code in enumerate(self.readers)}
        big = len(self.readers)
        reader_rank = np.array([rank_of.get(c, big) for c in flat.readers] + [big])
        read_rank = reader_rank[flat.read_reader] if len(flat.read_reader) else np.zeros(0, int)
        # chosen read per image: lowest rank, among listed readers only
        chosen = np.full(flat.n_images, -1, dtype=np.int64)
        order = np.lexsort((-read_rank, flat.read_image))  # last per image = best rank
        if len(order):
            last = np.r_[flat.read_image[order][1:] != flat.read_image[order][:-1], True]
            best_reads = order[last]
            listed = read_rank[best_reads] < big
            chosen[flat.read_image[best_reads[listed]]] = best_reads[listed]
        is_chosen_read = np.zeros(len(flat.read_image), dtype=bool)
        is_chosen_read[chosen[chosen >= 0]] = True
        box_rows = np.flatnonzero(is_chosen_read[flat.box_read])
        member_of = np.full(len(flat.box_class), -1, dtype=np.int64)
        member_of[box_rows] = np.arange(len(box_rows))
        decided = [flat.readers[flat.read_reader[c]] if c >= 0 else None for c in chosen]
        results = assemble(
            flat, flat.box_image[box_rows], flat.boxes[box_rows], flat.box_class[box_rows],
            np.ones(len(box_rows)), member_of,
            lambda i: {"strategy": "reader_priority", "decided_by": decided[i]},
        )
        undecided_ids = {flat.image_ids[i] for i, d in enumerate(decided) if d is None}
        undecided = [im for im in images if im.image_id in undecided_ids]
        if undecided:
            if self.fallback is not None:
                for image_id, res in self.fallback.run_boxes(undecided).items():
                    res.meta["decided_by"] = f"fallback:{self.fallback.name}"
                    results[image_id] = res
            else:
                for im in undecided:
                    old = results[im.image_id].meta
                    results[im.image_id] = empty_result(
                        frozenset(), {**old, "decided_by": None, "undecided": True}
                    )
        return results
