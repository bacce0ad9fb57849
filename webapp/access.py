"""Page-level role checks (the API enforces the same roles on every call).

Anonymous users are sent to the login page; a signed-in user without the role
gets 403, never a redirect loop.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied

from annotations.selectors import is_admin, reader_of


def _page(check: Callable[[object], bool]) -> Callable:
    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not check(request.user):
                raise PermissionDenied
            return view(request, *args, **kwargs)
        return wrapped
    return decorator


#: Admins only (``is_staff``).
admin_page = _page(is_admin)
#: Admins and radiologists (users with a reader code).
platform_page = _page(lambda user: is_admin(user) or reader_of(user) is not None)
