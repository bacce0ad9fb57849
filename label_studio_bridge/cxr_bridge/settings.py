"""Label Studio's own settings plus the bridge app and its routes.

Label Studio's launcher only sets ``DJANGO_SETTINGS_MODULE`` when it is unset, so starting it
with ``DJANGO_SETTINGS_MODULE=cxr_bridge.settings`` (and this folder on ``PYTHONPATH``) loads
everything Label Studio configures, unchanged, plus the bridge.

Label Studio's settings module reads ``django.conf.settings`` while it is still being imported
(Sentry, version checks).  Django resolves that nested access through the environment
variable, so while the import runs the variable names Label Studio's own module (which then
behaves exactly as in a plain start); Django keeps the complete settings of this module.
"""

import os

_OURS = os.environ.get("DJANGO_SETTINGS_MODULE", "cxr_bridge.settings")
os.environ["DJANGO_SETTINGS_MODULE"] = "label_studio.core.settings.label_studio"
from label_studio.core.settings.label_studio import *  # noqa: E402,F403

os.environ["DJANGO_SETTINGS_MODULE"] = _OURS

INSTALLED_APPS = [*INSTALLED_APPS, "cxr_bridge.apps.CxrBridgeConfig"]  # noqa: F405
ROOT_URLCONF = "cxr_bridge.urls"
MIDDLEWARE = [*MIDDLEWARE, "cxr_bridge.scope.OrganizationScopeMiddleware"]  # noqa: F405

#: The one credential that lets the platform create organizations and issue sign-in tickets.
CXR_BRIDGE_SECRET = os.environ.get("CXR_BRIDGE_SECRET", "")
#: A reader's only credential is the session the sign-in link opens (the bridge refuses to
#: hand out API tokens to readers), so it lives a working day, not Label Studio's 14 days.
SESSION_COOKIE_AGE = int(os.environ.get("CXR_BRIDGE_SESSION_SECONDS", str(12 * 3600)))
MAX_SESSION_AGE = SESSION_COOKIE_AGE

#: Seconds a sign-in ticket stays valid.
CXR_BRIDGE_TICKET_TTL = int(os.environ.get("CXR_BRIDGE_TICKET_TTL", "120"))
