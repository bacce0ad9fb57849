"""Validation of strategy params (JSON-like dicts) into typed values.

Every failure is ``DomainError("invalid_params")`` naming the param, so an API
can show it next to the form field; message and detail have the one shape of
:mod:`annotations.params` (shared with AL and training params).  ``done()``
rejects unknown keys, listing the allowed ones: a typo must not silently fall
back to a default.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from annotations.errors import DomainError
from annotations.params import (
    Boolean,
    Choice,
    Field,
    Number,
    ParamError,
    invalid_param,
    refuse_unknown,
)

DEFAULT_IOU_THR = 0.4  # VinBigData practice (the challenge's mAP@0.4)


def invalid(strategy: str, param: str, message: str) -> DomainError:
    """The shared ``invalid_params`` error (see :mod:`annotations.params`)."""
    return invalid_param(strategy, param, message)


class ParamReader:
    """Pops typed params from a dict, then ``done()`` checks nothing is left.

    Scalar fields are parsed by the shared schema fields of
    :mod:`annotations.params` (same types, bounds and messages as the AL and
    training params); the keys read so far are the allowed ones that
    ``done()`` lists when it refuses an unknown key.
    """

    def __init__(self, strategy: str, params: Mapping[str, Any] | None) -> None:
        if params is not None and not isinstance(params, Mapping):
            raise invalid(strategy, "*", "params must be an object")
        self.strategy = strategy
        self.left = dict(params or {})
        self.asked: set[str] = set()

    def _pop(self, key: str, default: Any) -> Any:
        self.asked.add(key)
        return self.left.pop(key, default)

    def _parse(self, key: str, field: Field) -> Any:
        try:
            return field.parse(self._pop(key, field.default))
        except ParamError as exc:
            raise invalid(self.strategy, key, str(exc)) from None

    def number(self, key: str, default: float, *, lo: float, hi: float) -> float:
        return self._parse(key, Number(default, lo=lo, hi=hi))

    def boolean(self, key: str, default: bool) -> bool:
        return self._parse(key, Boolean(default))

    def choice(self, key: str, default: str, options: tuple[str, ...]) -> str:
        return self._parse(key, Choice(default, tuple(options)))

    def reader_weights(self, key: str = "weights") -> dict[str, float]:
        """``{reader: weight > 0}``; readers not listed weigh 1."""
        value = self._pop(key, None) or {}
        if not isinstance(value, Mapping):
            raise invalid(self.strategy, key, "must be an object {reader: weight}")
        out: dict[str, float] = {}
        for reader, w in value.items():
            if isinstance(w, bool) or not isinstance(w, int | float) or not w > 0:
                raise invalid(self.strategy, key, f"weight of {reader!r} must be a number > 0")
            out[str(reader)] = float(w)
        return out

    def class_thresholds(self, key: str = "iou_thr") -> ClassThresholds:
        value = self._pop(key, DEFAULT_IOU_THR)
        default = self._pop("default_iou_thr", None)
        return ClassThresholds.parse(self.strategy, key, value, default)

    def done(self) -> None:
        refuse_unknown(self.strategy, self.left, self.asked)


class ClassThresholds:
    """IoU threshold per class id, with a default for unlisted classes.

    Accepts a number (one threshold for all classes) or ``{class_id: thr}``
    (keys may be ints or digit strings, since JSON keys are strings).
    """

    def __init__(self, default: float, per_class: dict[int, float] | None = None) -> None:
        self.default = default
        self.per_class = dict(per_class or {})

    @classmethod
    def parse(cls, strategy: str, key: str, value: Any, default: Any) -> ClassThresholds:
        def thr(v: Any, where: str) -> float:
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 <= v < 1.0:
                raise invalid(strategy, where, "IoU threshold must be a number in [0, 1)")
            return float(v)

        base = DEFAULT_IOU_THR if default is None else thr(default, "default_iou_thr")
        if isinstance(value, Mapping):
            per: dict[int, float] = {}
            for k, v in value.items():
                try:
                    cid = int(k)
                except (TypeError, ValueError):
                    raise invalid(strategy, key, f"class key {k!r} is not an integer") from None
                per[cid] = thr(v, f"{key}.{k}")
            return cls(base, per)
        if default is not None:
            raise invalid(strategy, "default_iou_thr", "only valid with a per-class iou_thr")
        return cls(thr(value, key))

    def lookup(self, classes: Any) -> Any:
        """Thresholds for an integer array of class ids (vectorised)."""
        classes = np.asarray(classes, dtype=np.int64)
        out = np.full(classes.shape, self.default, dtype=np.float64)
        for cid, t in self.per_class.items():
            out[classes == cid] = t
        return out

    def as_dict(self) -> dict[str, Any]:
        per_class = {str(k): v for k, v in self.per_class.items()}
        return {"default": self.default, "per_class": per_class}
