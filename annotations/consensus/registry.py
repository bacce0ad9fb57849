"""Strategy registry: names map to classes, so callers never branch on names.

Contract of a strategy class (``Strategy`` below):

* constructed from a JSON-like ``params`` dict; unknown or invalid params raise
  ``DomainError("invalid_params", ...)`` at construction, never later;
* ``run(images)`` receives the *whole* set (``Sequence[ImageReads]``) and returns
  ``dict[image_id, ConsensusResult]`` for every image given.  Whole-set calls let
  strategies estimate reader reliability across images and vectorise;
* deterministic: the same images give bit-identical results, whatever the order
  of images, of reads within an image, or of dict/set iteration.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from annotations.consensus.types import ConsensusResult, ImageReads
from annotations.registry import Registry


class Strategy(ABC):
    """Base class; subclasses set ``name`` (via ``register``) and implement ``run``."""

    name: ClassVar[str] = ""
    #: True when the strategy estimates the readers from the whole set: a run scoped to
    #: a few images then still learns from every read of the project (and stores only
    #: the scoped images), since a reader's skill cannot be learnt from one image.
    learns_from_panel: ClassVar[bool] = False

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        self.params = dict(params or {})

    @abstractmethod
    def run(self, images: Sequence[ImageReads]) -> dict[str, ConsensusResult]:
        """Consensus of every image given (see the module's contract)."""


_REGISTRY: Registry[Strategy] = Registry("consensus strategy")
register = _REGISTRY.register
get_strategy = _REGISTRY.get
available = _REGISTRY.available
build = _REGISTRY.build
