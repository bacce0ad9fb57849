"""Read models behind the web app's pages (dashboard, image browser, viewer,
learning curve, AL preview, quick read, a radiologist's own agreement).

Every endpoint checks the role first; the services apply blinding.
"""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from annotations.api.permissions import IsAdminOrRadiologist, IsPlatformAdmin
from annotations.errors import DomainError
from annotations.models import PrelabelRun
from annotations.selectors import project_list_visible, reader_of
from annotations.services import (
    active_learning,
    explanations,
    image_layers,
    image_state,
    my_reading,
    overview,
    projects,
)
from annotations.services.prelabeling import prelabel_run_cancel, prelabel_run_create
from annotations.services.quick_read import quick_read

OBJ = {200: {"type": "object"}}


def _float(request, name: str) -> float | None:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return None
    try:
        return float(raw)
    except ValueError as exc:
        raise DomainError("invalid_parameter", f"{name} must be a number") from exc


class ProjectDashboard(APIView):
    permission_classes = [IsPlatformAdmin]

    @extend_schema(responses=OBJ)
    def get(self, request, slug: str):
        return Response(overview.project_overview(projects.project_get(slug)))


class ProjectBrowse(APIView):
    """The image grid, filtered by class, state, agreement, uncertainty or gold."""

    permission_classes = [IsPlatformAdmin]

    @extend_schema(parameters=[
        OpenApiParameter("label", str), OpenApiParameter("state", str, enum=image_state.STATES),
        OpenApiParameter("agreement_max", float), OpenApiParameter("agreement_min", float),
        OpenApiParameter("uncertainty_min", float), OpenApiParameter("gold", bool),
        OpenApiParameter("finding", str, description="an image-level finding: images whose "
                         "predicted probability of it is at least finding_min"),
        OpenApiParameter("finding_min", float),
        OpenApiParameter("order", str, enum=["pseudo_id", "uncertainty", "agreement"]),
        OpenApiParameter("offset", int), OpenApiParameter("limit", int),
    ], responses=OBJ)
    def get(self, request, slug: str):
        q = request.query_params
        state = q.get("state") or None
        if state and state not in image_state.STATES:
            raise DomainError("invalid_parameter", f"state must be one of {image_state.STATES}")
        gold = {"true": True, "false": False}.get((q.get("gold") or "").lower())
        try:
            offset = max(0, int(q.get("offset") or 0))
            limit = min(200, max(1, int(q.get("limit") or 60)))
        except ValueError as exc:
            raise DomainError("invalid_parameter", "offset and limit are integers") from exc
        return Response(overview.image_browse(
            projects.project_get(slug), label=q.get("label") or None, state=state,
            agreement_max=_float(request, "agreement_max"),
            agreement_min=_float(request, "agreement_min"),
            uncertainty_min=_float(request, "uncertainty_min"), gold=gold,
            finding=q.get("finding") or None,
            finding_min=_float(request, "finding_min") if q.get("finding_min") else 0.5,
            order=q.get("order") or "pseudo_id", offset=offset, limit=limit))


class ImageLayers(APIView):
    """Boxes to overlay on one image; radiologists see only what blinding allows."""

    permission_classes = [IsAdminOrRadiologist]

    @extend_schema(responses=OBJ)
    def get(self, request, image_id: str):
        return Response(image_layers.image_layers(user=request.user, image_id=image_id))


class ImageHeatmap(APIView):
    """Grad-CAM of the promoted classifier for one finding on one image (the viewer's
    overlay); hidden wherever the model's layer is."""

    permission_classes = [IsAdminOrRadiologist]

    @extend_schema(parameters=[
        OpenApiParameter("finding", str, description="a class of the classifier"),
        OpenApiParameter("box", int, description="or: the index of a box of the model layer "
                         "(the detector's explanation of that box)")], responses=OBJ)
    def get(self, request, image_id: str):
        finding = request.query_params.get("finding") or ""
        raw_box = request.query_params.get("box")
        if raw_box not in (None, ""):
            try:
                box = int(raw_box)
            except ValueError as exc:
                raise DomainError("invalid_parameter", "box is an integer") from exc
            return Response(explanations.image_heatmap(user=request.user, image_id=image_id,
                                                       box=box))
        if not finding or len(finding) > 100:
            raise DomainError("invalid_parameter", "give the finding (a class name) or a box")
        return Response(explanations.image_heatmap(user=request.user, image_id=image_id,
                                                   finding=finding))


class LearningCurve(APIView):
    permission_classes = [IsPlatformAdmin]

    @extend_schema(responses=OBJ)
    def get(self, request, slug: str):
        return Response(overview.learning_curve(projects.project_get(slug)))


class ActiveLearningPreview(APIView):
    """What Start round would select now, from stored scores (nothing changes)."""

    permission_classes = [IsPlatformAdmin]

    @extend_schema(parameters=[OpenApiParameter("strategy", str),
                               OpenApiParameter("budget", int)], responses=OBJ)
    def get(self, request, slug: str):
        try:
            budget = int(request.query_params.get("budget") or 8)
        except ValueError as exc:
            raise DomainError("invalid_parameter", "budget must be an integer") from exc
        if not 1 <= budget <= 10000:
            raise DomainError("invalid_parameter", "budget must be between 1 and 10000")
        return Response(active_learning.al_round_preview(
            project=projects.project_get(slug),
            strategy=request.query_params.get("strategy") or "entropy", budget=budget))


class QuickReadRequest(serializers.Serializer):
    file = serializers.FileField(required=False)
    image = serializers.CharField(required=False, max_length=64)
    keep = serializers.BooleanField(required=False, default=False)


class QuickRead(APIView):
    """The promoted model's boxes on an uploaded DICOM (de-identified, not kept
    unless ``keep``) or on one of the project's images."""

    permission_classes = [IsAdminOrRadiologist]
    parser_classes = [MultiPartParser, FormParser]
    #: The upload is refused (413) while it streams in, past this setting.
    upload_max_file_setting = "QUICK_READ_MAX_BYTES"

    @extend_schema(request={"multipart/form-data": QuickReadRequest}, responses=OBJ)
    def post(self, request, slug: str):
        project = get_object_or_404(project_list_visible(request.user), slug=slug)
        data = QuickReadRequest(data=request.data)
        data.is_valid(raise_exception=True)
        keep = data.validated_data["keep"]
        if keep and not request.user.is_staff:
            raise DomainError("forbidden", "only admins add images to a project", status=403)
        return Response(quick_read(user=request.user, project=project,
                                   upload=data.validated_data.get("file"),
                                   image_id=data.validated_data.get("image") or None,
                                   keep=keep))


class _MyPerProject(APIView):
    """One summary per project the signed-in reader can see; nobody else's (``summary``
    takes the reader and the project)."""

    permission_classes = [IsAuthenticated]
    summary = staticmethod(lambda reader, project: {})

    @extend_schema(responses={200: {"type": "array", "items": {"type": "object"}}})
    def get(self, request):
        reader = reader_of(request.user)
        if reader is None:
            return Response([])
        return Response([self.summary(reader, p)
                         for p in project_list_visible(request.user).order_by("slug")])


class MyAgreement(_MyPerProject):
    """A radiologist against the final labels, per project, on final images only."""

    summary = staticmethod(my_reading.my_agreement)


class MyReliability(_MyPerProject):
    """A radiologist's own estimated sensitivity and false positives per class (the
    reader model over their own final images only); never another reader's."""

    summary = staticmethod(my_reading.my_reliability)


class PrelabelRunIn(serializers.Serializer):
    model_version = serializers.CharField(required=False, max_length=128)
    images = serializers.ListField(child=serializers.CharField(max_length=64), required=False,
                                   min_length=1, max_length=10_000)


class PrelabelRuns(APIView):
    """Batch pre-labelling runs of a project (progress: done of total images)."""

    permission_classes = [IsPlatformAdmin]

    @extend_schema(responses={200: {"type": "array", "items": {"type": "object"}}})
    def get(self, request, slug: str):
        project = projects.project_get(slug)
        return Response([_prelabel_run(r) for r in project.prelabel_runs.order_by("-id")[:20]])

    @extend_schema(request=PrelabelRunIn, responses={202: {"type": "object"}})
    def post(self, request, slug: str):
        """Start pre-labelling (the promoted version unless one is named; every image of
        the project unless ``images`` lists pseudonymous ids); a gpu worker runs it."""
        project = projects.project_get(slug)
        body = PrelabelRunIn(data=request.data)
        body.is_valid(raise_exception=True)
        name = body.validated_data.get("model_version")
        if name is not None and not project.model_versions.filter(name=name).exists():
            # only the registry's versions of this project (never a folder by name)
            raise DomainError("not_found", f"no model version {name!r} in this project")
        ids = body.validated_data.get("images")
        images = None
        if ids is not None:
            images = list(project.images.filter(pseudo_id__in=ids))
            if len(images) != len(set(ids)):
                raise DomainError("not_found", "some images are not in this project")
        run = prelabel_run_create(project=project, images=images, actor=request.user,
                                  model_version=name)
        return Response(_prelabel_run(run), status=202)


def _prelabel_run(r) -> dict:
    return {
        "id": r.pk, "model_version": r.model_version, "status": r.status, "reason": r.reason,
        "total": r.total, "done": r.done, "pushed": r.pushed, "attempts": r.attempts,
        "cancel_requested": r.cancel_requested,
        "created_at": r.created_at, "finished_at": r.finished_at,
    }


class PrelabelRunCancel(APIView):
    """Stop a pre-labelling run after its current batch (at once if still pending)."""

    permission_classes = [IsPlatformAdmin]

    @extend_schema(request=None, responses={200: {"type": "object"}})
    def post(self, request, pk: int):
        run = prelabel_run_cancel(run=get_object_or_404(PrelabelRun, pk=pk), actor=request.user)
        return Response(_prelabel_run(run))
