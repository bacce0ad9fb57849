"""Typed access to the platform's environment variables (prefix ``CXR_``).

Every setting has an embedded default so that a new user runs the platform with
no services at all.  A few conventional unprefixed names (``DATABASE_URL``,
``CELERY_BROKER_URL``) are honoured as fallbacks because hosting tools set them.
"""

from __future__ import annotations

import os

PREFIX = "CXR_"


def get(name: str, default: str | None = None, *, aliases: tuple[str, ...] = ()) -> str | None:
    for key in (PREFIX + name, *aliases):
        value = os.environ.get(key)
        if value not in (None, ""):
            return value
    return default


def get_bool(name: str, default: bool = False) -> bool:
    value = get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def get_int(name: str, default: int) -> int:
    value = get(name)
    return default if value is None else int(value)


def get_list(name: str, default: list[str]) -> list[str]:
    value = get(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]
