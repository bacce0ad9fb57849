"""Page URLs (the REST API they draw from lives under /api/)."""

from django.urls import path

from webapp import views

app_name = "web"

urlpatterns = [
    path("projects/", views.project_list, name="projects"),
    path("readers/", views.reader_create, name="reader-create"),
    path("projects/<slug:slug>/", views.dashboard, name="dashboard"),
    path("projects/<slug:slug>/images/", views.image_browser, name="images"),
    path("projects/<slug:slug>/models/", views.models_page, name="models"),
    path("projects/<slug:slug>/active-learning/", views.active_learning_page, name="al"),
    path("projects/<slug:slug>/feedback/", views.feedback_page, name="feedback"),
    path("images/<str:image_id>/", views.image_viewer, name="viewer"),
    path("quick-read/", views.quick_read_page, name="quick-read"),
    path("home/", views.home, name="home"),
]
