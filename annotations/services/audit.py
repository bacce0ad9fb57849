"""Append-only audit log of who did what (never patient identity)."""

from __future__ import annotations

from typing import Any

from annotations.models import AuditEvent, Project


def audit_record(
    *,
    action: str,
    actor: Any = None,
    project: Project | None = None,
    target: Any = None,
    detail: dict | None = None,
) -> AuditEvent:
    user = actor if getattr(actor, "is_authenticated", False) else None
    return AuditEvent.objects.create(
        actor=user,
        action=action,
        project=project,
        target_type=type(target).__name__ if target is not None else "",
        target_id=str(getattr(target, "pk", "") or "") if target is not None else "",
        detail=detail or {},
    )
