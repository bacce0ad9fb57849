"""Model guards that keep every member inside the organizations they belong to.

Label Studio scopes every endpoint by ``request.user.active_organization``, and its user API
lets a member PATCH that field on themselves.  Unchecked, a reader could set it to another
workspace's organization id and see everything there.  The guard sits on the model (a
``pre_save`` signal), so it holds for every path that saves a user: API, forms, admin.
Removing the owner's membership (which would lock the platform out of the workspace) is
refused the same way.
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


def connect() -> None:
    from django.contrib.auth import get_user_model
    from organizations.models import OrganizationMember

    pre_save.connect(_user_active_org_guard, sender=get_user_model(),
                     dispatch_uid="cxr_bridge_active_org")
    pre_save.connect(_owner_membership_guard, sender=OrganizationMember,
                     dispatch_uid="cxr_bridge_owner_membership")
