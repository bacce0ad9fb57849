"""Pages.  Thin: a role check, a service call for a write, a template.

Plots and live progress are drawn by the page's script from the REST API, so a
reload resumes them from the server's state.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.views import LoginView
from django.db.models import Count, Q
from django.http import Http404, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from annotations.consensus import available as consensus_strategies
from annotations.errors import DomainError
from annotations.models import ModelVersion, Project, Reader
from annotations.selectors import image_list_visible, is_admin, project_list_visible, reader_of
from annotations.services import my_reading, projects, readers
from annotations.services.consensus import consensus_run_create
from annotations.services.prelabeling import prelabel_run_create
from webapp.access import admin_page, platform_page
from webapp.forms import (
    ConsensusStrategyForm,
    ProjectCreateForm,
    ReaderCreateForm,
    ThrottledAuthenticationForm,
)


class SignIn(LoginView):
    """The sign-in page; throttled by ``accounts.sign_in`` (429 while locked out)."""

    template_name = "webapp/login.html"
    form_class = ThrottledAuthenticationForm
    redirect_authenticated_user = True

    def form_invalid(self, form):
        response = super().form_invalid(form)
        if form.throttled:
            response.status_code = 429
        return response


def index(request):
    """Admins land on their projects, radiologists on their home page."""
    if not request.user.is_authenticated:
        return redirect("login")
    if is_admin(request.user):
        return redirect("web:projects")
    return redirect("web:home")


def _project(request, slug: str) -> Project:
    project = project_list_visible(request.user).filter(slug=slug).first()
    if project is None:
        raise Http404("no such project")
    return project


def _ctx(project: Project, tab: str, **extra) -> dict:
    return {"project": project, "tab": tab, **extra}


@admin_page
@require_http_methods(["GET", "POST"])
def project_list(request):
    form = ProjectCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            project = projects.project_create(actor=request.user, **form.service_kwargs())
        except DomainError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, f"Project {project.name} created.")
            return redirect("web:dashboard", slug=project.slug)
    return render(request, "webapp/projects.html", {
        "form": form, "projects": _project_rows(), "nav": "projects",
        "reader_form": ReaderCreateForm(), "readers": _readers()})


def _project_rows() -> list[Project]:
    rows = list(Project.objects.annotate(
        n_images=Count("images", distinct=True),
        n_gold=Count("images", filter=Q(images__is_gold=True), distinct=True))
        .order_by("name"))
    promoted = dict(ModelVersion.objects.filter(promoted=True, kind="detector")
                    .values_list("project_id", "name"))
    for row in rows:
        row.model_name = promoted.get(row.pk)
    return rows


def _readers() -> list[Reader]:
    return list(Reader.objects.select_related("user").annotate(
        n_assigned=Count("assignments"),
        n_done=Count("assignments", filter=Q(assignments__status__in=["completed", "skipped"])))
        .order_by("code"))


@admin_page
@require_http_methods(["POST"])
def reader_create(request):
    form = ReaderCreateForm(request.POST)
    if form.is_valid():
        try:
            reader = readers.reader_create(actor=request.user, email=form.cleaned_data["email"],
                                           code=form.cleaned_data["code"],
                                           password=form.cleaned_data["password"] or None)
        except DomainError as exc:
            form.add_error("password" if exc.code == "weak_password" else None, exc.message)
        else:
            messages.success(request, f"Reader {reader.code} created.")
            return redirect("web:projects")
    return render(request, "webapp/projects.html", {
        "form": ProjectCreateForm(), "projects": _project_rows(), "nav": "projects",
        "reader_form": form, "readers": _readers()}, status=400)


@admin_page
@require_http_methods(["GET", "POST"])
def dashboard(request, slug: str):
    project = _project(request, slug)
    action = request.POST.get("action") if request.method == "POST" else None
    if action == "rerun":
        try:
            run = consensus_run_create(project=project, actor=request.user,
                                       strategy=project.consensus_strategy,
                                       params=project.consensus_params)
        except DomainError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, f"Consensus run #{run.pk} started.")
        return redirect("web:dashboard", slug=slug)
    if action not in (None, "strategy"):
        return HttpResponseBadRequest("unknown action")
    form = ConsensusStrategyForm(request.POST if action else None, initial={
        "consensus_strategy": project.consensus_strategy, "params": project.consensus_params})
    if action and form.is_valid():
        try:
            projects.project_update(project=project, actor=request.user,
                                    consensus_strategy=form.cleaned_data["consensus_strategy"],
                                    consensus_params=form.cleaned_data["params"])
        except DomainError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, "Consensus strategy saved.")
            return redirect("web:dashboard", slug=slug)
    return render(request, "webapp/dashboard.html", _ctx(
        project, "dashboard", form=form, strategies=consensus_strategies()),
        status=400 if action else 200)


@admin_page
def image_browser(request, slug: str):
    project = _project(request, slug)
    return render(request, "webapp/images.html", _ctx(
        project, "images",
        classes=list(project.label_classes.order_by("class_id").values_list("name", flat=True))))


@platform_page
def image_viewer(request, image_id: str):
    image = (image_list_visible(request.user).filter(pseudo_id=image_id)
             .select_related("project").first())
    if image is None:
        raise Http404("no such image")
    return render(request, "webapp/viewer.html", _ctx(image.project, "images", image=image))


@admin_page
@require_http_methods(["GET", "POST"])
def models_page(request, slug: str):
    project = _project(request, slug)
    if request.method == "POST":  # pre-label the project with the promoted model
        try:
            run = prelabel_run_create(project=project, actor=request.user)
        except DomainError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, f"Pre-labelling #{run.pk} started "
                                      f"with {run.model_version}.")
        return redirect("web:models", slug=slug)
    return render(request, "webapp/models.html", _ctx(project, "models"))


@admin_page
def active_learning_page(request, slug: str):
    project = _project(request, slug)
    from training.active_learning import available

    return render(request, "webapp/active_learning.html", _ctx(
        project, "al", strategies=available()))


@admin_page
def feedback_page(request, slug: str):
    return render(request, "webapp/feedback.html", _ctx(_project(request, slug), "feedback"))


@platform_page
def quick_read_page(request):
    choices = [p for p in project_list_visible(request.user).order_by("name")]
    promoted = dict(ModelVersion.objects.filter(promoted=True, kind="detector", project__in=choices)
                    .values_list("project_id", "name"))
    return render(request, "webapp/quick_read.html", {
        "projects": [{"slug": p.slug, "name": p.name, "model": promoted.get(p.pk)}
                     for p in choices],
        "max_mb": settings.QUICK_READ_MAX_BYTES // (1024 * 1024),
        "can_keep": is_admin(request.user)})


@platform_page
def home(request):
    reader = reader_of(request.user)
    if reader is None:  # an admin without a reader code has no reading of their own
        return redirect("web:projects")
    projects = list(project_list_visible(request.user).order_by("name"))
    return render(request, "webapp/home.html", {
        "reader": reader, "workspaces": my_reading.my_workspaces(reader),
        "progress": my_reading.my_progress(reader), "queue": my_reading.my_queue(reader),
        "agreement": [my_reading.my_agreement(reader, p) for p in projects],
        "reliability": [my_reading.my_reliability(reader, p) for p in projects]})
