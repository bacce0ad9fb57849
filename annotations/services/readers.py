"""Readers (radiologists) and their assignments."""

from __future__ import annotations

import re
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Count

from annotations import events
from annotations.errors import DomainError
from annotations.models import Assignment, Image, Project, Reader
from annotations.services.accounts import password_validate
from annotations.services.audit import audit_record

CODE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")


@transaction.atomic
def reader_create(*, email: str, code: str, password: str | None = None,
                  actor: Any = None) -> Reader:
    """Create a radiologist account with a reader code such as ``R9``.

    A password, when given, must pass the platform's password policy
    (``weak_password`` otherwise); without one the account cannot sign in
    until an admin sets one.
    """
    if not CODE_RE.match(code or ""):
        raise DomainError("invalid_reader", "reader code must be letters/digits, e.g. R9")
    if Reader.objects.filter(code=code).exists():
        raise DomainError("conflict", f"reader code {code} is taken")
    User = get_user_model()
    if User.objects.filter(username=email).exists():
        raise DomainError("conflict", "a user with this email exists")
    if password is not None:
        password_validate(password, username=email, email=email)
    user = User.objects.create_user(username=email, email=email, password=password)
    if password is None:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    reader = Reader.objects.create(user=user, code=code)
    audit_record(action="reader.create", actor=actor, target=reader, detail={"code": code})
    return reader


@transaction.atomic
def readers_enough(project: Project) -> list[Reader]:
    """The active readers, when there are enough for ``readers_per_image``."""
    readers = list(Reader.objects.filter(active=True).order_by("code"))
    if len(readers) < project.readers_per_image:
        raise DomainError("not_enough_readers", f"{project.readers_per_image} readers per "
                          f"image needed, {len(readers)} active")
    return readers


def assignments_create(*, project: Project, images: list[Image] | None = None,
                       actor: Any = None) -> list[Assignment]:
    """Give each image ``project.readers_per_image`` distinct readers, load balanced.

    Deterministic: images in id order, readers by (current load, code).  An
    image never gets the same reader twice; images that already have enough
    readers are left alone.
    """
    k = project.readers_per_image
    readers = readers_enough(project)
    load = dict(
        Assignment.objects.filter(image__project=project).values_list("reader_id")
        .annotate(n=Count("id")).values_list("reader_id", "n")
    )
    images = images if images is not None else list(project.images.order_by("id"))
    created = []
    for image in images:
        have = set(image.assignments.values_list("reader_id", flat=True))
        need = k - len(have)
        if need <= 0:
            continue
        candidates = sorted((r for r in readers if r.pk not in have),
                            key=lambda r: (load.get(r.pk, 0), r.code))
        for reader in candidates[:need]:
            created.append(Assignment.objects.create(image=image, reader=reader))
            load[reader.pk] = load.get(reader.pk, 0) + 1
    audit_record(action="assignments.create", actor=actor, project=project,
                 detail={"created": len(created)})
    if created:
        events.emit(events.AssignmentsCreated(
            project_id=project.pk, image_ids=tuple(sorted({a.image_id for a in created}))))
    return created
