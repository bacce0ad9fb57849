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

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from annotations.consensus.types import ConsensusResult, ImageReads
from annotations.errors import DomainError


class Strategy:
    """Base class; subclasses set ``name`` (via ``register``) and implement ``run``."""

    name: ClassVar[str] = ""

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        self.params = dict(params or {})

    def run(self, images: Sequence[ImageReads]) -> dict[str, ConsensusResult]:
        raise NotImplementedError


_REGISTRY: dict[str, type[Strategy]] = {}


def register(name: str) -> Callable[[type[Strategy]], type[Strategy]]:
    """Class decorator adding a strategy under ``name`` (names are unique)."""

    def deco(cls: type[Strategy]) -> type[Strategy]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"consensus strategy {name!r} registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def get_strategy(name: str) -> type[Strategy]:
    try:
        return _REGISTRY[name]
    except KeyError as exc:
        raise DomainError(
            "unknown_strategy", f"unknown consensus strategy {name!r}", detail=available()
        ) from exc


def available() -> list[str]:
    return sorted(_REGISTRY)


def build(name: str, params: Mapping[str, Any] | None = None) -> Strategy:
    """Instantiate a registered strategy (params validated by its constructor)."""
    return get_strategy(name)(params or {})
