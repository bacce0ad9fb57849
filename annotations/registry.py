"""A name -> class registry for pluggable algorithms (pure; no Django).

Consensus strategies, active-learning strategies and the like register under a
name so callers pick one by configuration and never branch on names.  Building
an unknown name raises ``DomainError("unknown_strategy")`` listing the known ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from annotations.errors import DomainError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._classes: dict[str, type[T]] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        """Class decorator: add the class under ``name`` (names are unique)."""

        def deco(cls: type[T]) -> type[T]:
            if name in self._classes and self._classes[name] is not cls:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            cls.name = name  # type: ignore[attr-defined]
            self._classes[name] = cls
            return cls

        return deco

    def get(self, name: str) -> type[T]:
        try:
            return self._classes[name]
        except (KeyError, TypeError) as exc:
            raise DomainError("unknown_strategy", f"unknown {self.kind} {name!r}",
                              detail=self.available()) from exc

    def available(self) -> list[str]:
        return sorted(self._classes)

    def build(self, name: str, params: Mapping[str, Any] | None = None) -> T:
        """Instantiate a registered class (its constructor validates ``params``)."""
        return self.get(name)(params or {})  # type: ignore[call-arg]
