"""Requests to retrain, including Label Studio's "Start training" button."""

from __future__ import annotations

import logging
from typing import Any

from annotations.errors import DomainError
from annotations.models import TrainingRequest, Workspace
from annotations.services.audit import audit_record

logger = logging.getLogger(__name__)


def training_request_from_label_studio(*, ls_project_id: int, actor: Any) -> TrainingRequest:
    ws = Workspace.objects.filter(ls_project_id=ls_project_id).select_related("project").first()
    if ws is None:
        raise DomainError("not_found", f"Label Studio project {ls_project_id} is not ours")
    project = ws.project
    if not project.allow_label_studio_training:
        logger.warning("training request from Label Studio refused for project %s", project.pk)
        audit_record(action="training.request_refused", actor=actor, project=project,
                     detail={"source": "label_studio", "ls_project": ls_project_id})
        raise DomainError("forbidden", "this project does not allow Label Studio to start "
                          "training", status=403)
    req = TrainingRequest.objects.create(project=project, source="label_studio",
                                         requested_by=actor)
    audit_record(action="training.request", actor=actor, project=project, target=req,
                 detail={"source": "label_studio"})
    return req
