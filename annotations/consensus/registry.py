"""Strategy registry: names map to classes, so callers never branch on names.

Contract of a strategy class (``Strategy`` below):

* constructed from a JSON-like ``params`` dict; unknown or invalid params raise
  ``DomainError("invalid_params", ...)`` at construction, never later;
* ``run_boxes(images)`` receives the *whole* set (``Sequence[ImageReads]``) and returns
  ``dict[image_id, ConsensusResult]`` for every image given.  Whole-set calls let
  strategies estimate reader reliability across images and vectorise.  Callers call
  ``run``, which then decides the image-level labels the same way for every strategy
  (``image_findings``: params ``image_method``, ``image_quorum``,
  ``image_prior_strength``, taken out before the strategy sees its params);
* deterministic: the same images give bit-identical results, whatever the order
  of images, of reads within an image, or of dict/set iteration.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from annotations.consensus import image_findings
from annotations.consensus import masks as mask_consensus
from annotations.consensus.image_findings import ImageRule
from annotations.consensus.types import ConsensusResult, ImageReads
from annotations.registry import Registry


class Strategy(ABC):
    """Base class; subclasses set ``name`` (via ``register``) and implement ``run``."""

    name: ClassVar[str] = ""
    #: True when the strategy estimates the readers from the whole set: a run scoped to
    #: a few images then still learns from every read of the project (and stores only
    #: the scoped images), since a reader's skill cannot be learnt from one image.
    learns_from_panel: ClassVar[bool] = False

    #: the image-level method used when the params name none
    default_image_method: ClassVar[str] = "majority"

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        self.params = dict(params or {})
        self.image_rule = ImageRule(method=self.default_image_method)
        self.image_readers: dict[str, dict[str, dict[str, Any]]] = {}

    @property
    def panel_wide(self) -> bool:
        """Learns from every read of the project (boxes or image-level findings)."""
        return self.learns_from_panel or self.image_rule.method == "reader_model"

    @abstractmethod
    def run_boxes(self, images: Sequence[ImageReads]) -> dict[str, ConsensusResult]:
        """Box consensus of every image given (see the module's contract)."""

    def run(self, images: Sequence[ImageReads]) -> dict[str, ConsensusResult]:
        """Consensus of every image given: boxes, then image-level labels."""
        results = self.run_boxes(images)
        findings = image_findings.decide(images, self.image_rule)
        self.image_readers = findings.readers
        return image_findings.apply(results, images, findings)


_REGISTRY: Registry[Strategy] = Registry("consensus strategy")
register = _REGISTRY.register
get_strategy = _REGISTRY.get
available = _REGISTRY.available


def build(name: str, params: Mapping[str, Any] | None = None) -> Strategy:
    """The strategy ``name`` with its params; the image-level ones configure ``run``; the
    mask ones (``masks.KEYS``) are validated here and used by the mask consensus."""
    cls = get_strategy(name)
    params = dict(params or {})
    image_params = {k: params.pop(k) for k in image_findings.KEYS if k in params}
    mask_consensus.build({k: params.pop(k) for k in mask_consensus.KEYS if k in params})
    strategy = cls(params)
    strategy.image_rule = ImageRule.parse(name, image_params, cls.default_image_method)
    return strategy
