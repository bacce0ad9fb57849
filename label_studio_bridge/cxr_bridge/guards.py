"""Model guards that keep every member inside the organizations they belong to.

Label Studio scopes every endpoint by ``request.user.active_organization``, and its user API
lets a member PATCH that field on themselves.  Unchecked, a reader could set it to another
workspace's organization id and see everything there.  The guard sits on the model (a
``pre_save`` signal), so it holds for every path that saves a user: API, forms, admin.
Removing the owner's membership (which would lock the platform out of the workspace), and
renaming a workspace organization (the bridge finds it by title), are refused the same way.
"""

from __future__ import annotations

from django.db.models.signals import pre_save
from rest_framework.exceptions import PermissionDenied


def _user_active_org_guard(sender, instance, raw=False, **kwargs) -> None:
    if raw or instance.pk is None or instance.active_organization_id is None:
        return
    from organizations.models import OrganizationMember

    member = OrganizationMember.objects.filter(
        user_id=instance.pk, organization_id=instance.active_organization_id,
        deleted_at__isnull=True).exists()
    if not member:
        raise PermissionDenied("not a member of that organization")


def _owner_membership_guard(sender, instance, raw=False, **kwargs) -> None:
    if raw or instance.deleted_at is None:
        return
    if instance.organization.created_by_id == instance.user_id:
        raise PermissionDenied("the organization owner's membership cannot be removed")


def _organization_title_guard(sender, instance, raw=False, **kwargs) -> None:
    """The bridge finds a workspace's organization by its ``cxr:`` title: nobody may take
    one on, drop one, or change one after the bridge wrote it."""
    if raw or instance.pk is None:
        return
    old = sender.objects.filter(pk=instance.pk).values_list("title", flat=True).first()
    if old is not None and old != instance.title and (
            old.startswith("cxr:") or instance.title.startswith("cxr:")):
        raise PermissionDenied("workspace organizations keep their title")


def connect() -> None:
    from django.contrib.auth import get_user_model
    from organizations.models import OrganizationMember

    pre_save.connect(_user_active_org_guard, sender=get_user_model(),
                     dispatch_uid="cxr_bridge_active_org")
    pre_save.connect(_owner_membership_guard, sender=OrganizationMember,
                     dispatch_uid="cxr_bridge_owner_membership")
    from organizations.models import Organization

    pre_save.connect(_organization_title_guard, sender=Organization,
                     dispatch_uid="cxr_bridge_organization_title")
