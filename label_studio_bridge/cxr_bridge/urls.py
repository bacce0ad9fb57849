"""Label Studio's routes with the bridge's two in front."""

from core.urls import urlpatterns as label_studio_urlpatterns
from django.urls import path

from cxr_bridge import views

urlpatterns = [
    path("cxr-bridge/workspaces/", views.workspace_provision, name="cxr-bridge-workspaces"),
    path("cxr-bridge/sso/", views.sso_login, name="cxr-bridge-sso"),
    *label_studio_urlpatterns,
]
