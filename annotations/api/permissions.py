"""Role checks: admin (``is_staff``) and radiologist (has a ``Reader``)."""

from rest_framework.permissions import BasePermission

from annotations.selectors import is_admin, reader_of


class IsPlatformAdmin(BasePermission):
    message = "admins only"

    def has_permission(self, request, view) -> bool:
        return is_admin(request.user)


class IsAdminOrRadiologist(BasePermission):
    message = "admins and radiologists only"

    def has_permission(self, request, view) -> bool:
        return is_admin(request.user) or reader_of(request.user) is not None


class ReadOnlyForRadiologists(BasePermission):
    """Admins may write; radiologists may only read (what selectors let them see)."""

    message = "admins only"

    def has_permission(self, request, view) -> bool:
        if is_admin(request.user):
            return True
        return request.method in ("GET", "HEAD", "OPTIONS") and reader_of(request.user) is not None


class IsAdminOrAdjudicator(BasePermission):
    message = "admins and adjudicators only"

    def has_permission(self, request, view) -> bool:
        reader = reader_of(request.user)
        return is_admin(request.user) or bool(reader and reader.is_adjudicator)
