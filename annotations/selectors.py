"""Reads, with the visibility rules applied in one place.

Admins (``is_staff``) see everything.  A radiologist sees only the images
assigned to them and only their own assignments: never another reader's work.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from annotations.models import Adjudication, Assignment, Image, ModelVersion, Project, Workspace


def is_admin(user: Any) -> bool:
    return bool(getattr(user, "is_authenticated", False) and user.is_staff)


def reader_of(user: Any):
    return getattr(user, "reader", None) if getattr(user, "is_authenticated", False) else None


def model_version_promoted(project: Project) -> ModelVersion | None:
    """The version serving ``project``: the registry's, the only truth (no marker file)."""
    return ModelVersion.objects.filter(project=project, promoted=True, kind="detector").first()


def model_version_gate(project: Project) -> ModelVersion | None:
    """The classifier gating the project's boxes: its promoted classifier when the
    two-stage switch is on, else None."""
    if not project.two_stage:
        return None
    return ModelVersion.objects.filter(project=project, promoted=True,
                                       kind="classifier").first()


def model_version_for_ls_project(ls_project_id: int) -> ModelVersion | None:
    """The promoted version of the platform project behind a Label Studio project
    (every workspace is one Label Studio project of one platform project)."""
    workspace = Workspace.objects.filter(ls_project_id=ls_project_id).select_related(
        "project").first()
    return model_version_promoted(workspace.project) if workspace else None


def project_for_ls_project(ls_project_id: int) -> Project | None:
    """The platform project behind a Label Studio project (one workspace's)."""
    workspace = Workspace.objects.filter(ls_project_id=ls_project_id).select_related(
        "project").first()
    return workspace.project if workspace else None


def model_version_segmenter(project: Project) -> ModelVersion | None:
    """The project's promoted mask model, if any."""
    return ModelVersion.objects.filter(project=project, promoted=True,
                                       kind="segmenter").first()


def project_list_visible(user: Any) -> QuerySet[Project]:
    if is_admin(user):
        return Project.objects.all()
    reader = reader_of(user)
    if reader is None:
        return Project.objects.none()
    return Project.objects.filter(images__assignments__reader=reader).distinct()


def image_list_visible(user: Any, project: Project | None = None) -> QuerySet[Image]:
    qs = Image.objects.all() if project is None else project.images.all()
    if is_admin(user):
        return qs
    reader = reader_of(user)
    if reader is None:
        return qs.none()
    return qs.filter(assignments__reader=reader).distinct()


def assignment_list_for(user: Any) -> QuerySet[Assignment]:
    reader = reader_of(user)
    if reader is None:
        return Assignment.objects.none()
    return Assignment.objects.filter(reader=reader).select_related("image", "image__project")


def adjudications_visible_to(user: Any) -> QuerySet[Adjudication]:
    """Cases a user may see: every case for admins; for an adjudicator, the cases of the
    projects they adjudicate on images they did not read (a case shows every read, so
    seeing one's own image's case would unblind); nothing for anyone else."""
    if is_admin(user):
        return Adjudication.objects.all()
    reader = reader_of(user)
    if reader is None or not reader.is_adjudicator or not reader.active:
        return Adjudication.objects.none()
    return Adjudication.objects.filter(project__in=reader.adjudicates.all()).exclude(
        image__assignments__reader=reader)
