"""The one parameter schema: consensus strategies, AL strategies and training runs.

Parameters arrive as JSON-like dicts from the API, the web forms and the
CLI.  Every owner (a consensus strategy, an AL strategy, a training run)
declares typed fields with bounds and defaults, and ``Schema.validate``
turns a dict into complete typed values or raises ``DomainError
("invalid_params")``, so a bad parameter reads the same wherever it is
given:

* message ``"{owner}: {param}: {problem}"``;
* detail ``{"strategy": owner, "param": param, "error": problem, "problems":
  [{"param", "error"}, ...]}``, every problem of the dict, not just the first;
* unknown keys are refused (a typo must not silently fall back to a default)
  with the allowed ones listed in the message and in ``detail["allowed"]``.

Pure: imports nothing of Django, so ``training`` and ``annotations.consensus``
both use it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from annotations.errors import DomainError, Problems


def invalid_param(owner: str, param: str, message: str, **extra: Any) -> DomainError:
    """The ``invalid_params`` error of one parameter (shape shared by all owners)."""
    problems = [{"param": param, "error": message}]
    detail = {"strategy": owner, "param": param, "error": message, "problems": problems, **extra}
    return DomainError("invalid_params", f"{owner}: {param}: {message}", detail=detail)


def refuse_unknown(owner: str, given: Iterable[Any], allowed: Iterable[str]) -> None:
    """Raise ``invalid_params`` naming every unknown key and every allowed one."""
    allowed = sorted(allowed)
    unknown = sorted(str(k) for k in given if k not in allowed)
    if unknown:
        raise invalid_param(
            owner, unknown[0], f"unknown param(s) {unknown}; allowed: {allowed}",
            unknown=unknown, allowed=allowed,
        )


class ParamError(ValueError):
    """Raised by a field's ``parse``; the schema adds owner and param name."""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class Number:
    """A finite number in ``[lo, hi]`` (bounds optional; ``hi_open`` makes it ``< hi``).

    ``integer`` also refuses fractional values (and returns ``int``);
    ``nullable`` accepts ``None`` (meaning "use the library's own default").
    """

    default: Any
    lo: float | None = None
    hi: float | None = None
    hi_open: bool = False
    integer: bool = False
    nullable: bool = False

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        if self.lo is not None and self.hi is not None:
            return f"{kind} in [{self.lo}, {self.hi}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f"{kind} >= {self.lo}"
        if self.hi is not None:
            return f"{kind} {'<' if self.hi_open else '<='} {self.hi}"
        return kind

    def parse(self, value: Any) -> Any:
        if value is None and self.nullable:
            return None
        if not _is_number(value) or not math.isfinite(value):
            raise ParamError(f"must be {self.describe()}")
        if self.integer and value != int(value):
            raise ParamError(f"must be {self.describe()}")
        below = self.lo is not None and value < self.lo
        above = self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi)
        if below or above:
            raise ParamError(f"must be {self.describe()}")
        return int(value) if self.integer else float(value)


@dataclass(frozen=True)
class Choice:
    """One of ``options`` (compared as given: strings stay case-sensitive)."""

    default: Any
    options: tuple[Any, ...]

    def parse(self, value: Any) -> Any:
        if value not in self.options:
            raise ParamError(f"must be one of {list(self.options)}")
        return value


@dataclass(frozen=True)
class Boolean:
    """``true`` or ``false`` only: ``0``/``"no"`` are refused rather than guessed."""

    default: bool

    def parse(self, value: Any) -> bool:
        if not isinstance(value, bool):
            raise ParamError("must be true or false")
        return value


Field = Number | Choice | Boolean


@dataclass(frozen=True)
class Schema:
    """Named typed fields; ``validate`` gives a complete, typed params dict."""

    owner: str
    fields: Mapping[str, Field]

    @property
    def defaults(self) -> dict[str, Any]:
        return {key: f.default for key, f in self.fields.items()}

    def validate(self, params: Mapping[str, Any] | None) -> dict[str, Any]:
        """Defaults filled in, every value parsed; all problems reported at once."""
        if params is not None and not isinstance(params, Mapping):
            raise invalid_param(self.owner, "*", "params must be an object")
        given = dict(params or {})
        refuse_unknown(self.owner, given, self.fields)
        problems = Problems()
        out: dict[str, Any] = {}
        for key, f in self.fields.items():
            try:
                out[key] = f.parse(given[key]) if key in given else f.default
            except ParamError as exc:
                problems.add(str(exc), param=key)
        if problems:
            first = problems.kept[0]
            err = invalid_param(self.owner, first.where["param"], first.message)
            err.detail["problems"] = problems.items
            raise err
        return out
