"""URL map: web pages at the root, API under /api/, signed image files under /files/,
admin, docs."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from annotations.api import views
from webapp import views as web_views
from webapp.forms import ThrottledAdminAuthenticationForm

#: The admin's sign-in page is throttled like every other (``accounts.sign_in``).
admin.site.login_form = ThrottledAdminAuthenticationForm

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("annotations.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("files/images/<str:image_id>/<str:variant>.png", views.image_file, name="image-file"),
    path("health/", views.health, name="health"),
    path("login/", web_views.SignIn.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", web_views.index, name="index"),
    path("", include("webapp.urls")),
]
