"""URL map: API under /api/, signed image files under /files/, admin, docs."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from annotations.api import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("annotations.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("files/images/<str:image_id>/<str:variant>.png", views.image_file, name="image-file"),
    path("health/", views.health, name="health"),
]
