"""Validation of strategy params (JSON-like dicts) into typed values.

Every failure is ``DomainError("invalid_params")`` naming the param, so an API
can show it next to the form field.  ``done()`` rejects unknown keys: a typo
must not silently fall back to a default.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from annotations.errors import DomainError

DEFAULT_IOU_THR = 0.4  # VinBigData practice (the challenge's mAP@0.4)


def invalid(strategy: str, param: str, message: str) -> DomainError:
    return DomainError(
        "invalid_params",
        f"{strategy}: {param}: {message}",
        detail={"strategy": strategy, "param": param, "error": message},
    )


class ParamReader:
    """Pops typed params from a dict, then ``done()`` checks nothing is left."""

    def __init__(self, strategy: str, params: Mapping[str, Any] | None) -> None:
        if params is not None and not isinstance(params, Mapping):
            raise invalid(strategy, "*", "params must be an object")
        self.strategy = strategy
        self.left = dict(params or {})

    def number(self, key: str, default: float, *, lo: float, hi: float) -> float:
        value = self.left.pop(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise invalid(self.strategy, key, "must be a number")
        if not lo <= value <= hi:
            raise invalid(self.strategy, key, f"must be in [{lo}, {hi}]")
        return float(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self.left.pop(key, default)
        if not isinstance(value, bool):
            raise invalid(self.strategy, key, "must be true or false")
        return value

    def choice(self, key: str, default: str, options: tuple[str, ...]) -> str:
        value = self.left.pop(key, default)
        if value not in options:
            raise invalid(self.strategy, key, f"must be one of {list(options)}")
        return value

    def reader_weights(self, key: str = "weights") -> dict[str, float]:
        """``{reader: weight > 0}``; readers not listed weigh 1."""
        value = self.left.pop(key, None) or {}
        if not isinstance(value, Mapping):
            raise invalid(self.strategy, key, "must be an object {reader: weight}")
        out: dict[str, float] = {}
        for reader, w in value.items():
            if isinstance(w, bool) or not isinstance(w, int | float) or not w > 0:
                raise invalid(self.strategy, key, f"weight of {reader!r} must be a number > 0")
            out[str(reader)] = float(w)
        return out

    def class_thresholds(self, key: str = "iou_thr") -> ClassThresholds:
        value = self.left.pop(key, DEFAULT_IOU_THR)
        default = self.left.pop("default_iou_thr", None)
        return ClassThresholds.parse(self.strategy, key, value, default)

    def done(self) -> None:
        if self.left:
            raise invalid(self.strategy, sorted(self.left)[0], "unknown param")


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
