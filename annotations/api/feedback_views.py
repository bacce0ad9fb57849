"""Feedback on model predictions: the admins' summary, radiologists' ratings."""

from __future__ import annotations

from collections.abc import Mapping

from django.http import FileResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from annotations.api.permissions import IsAdminOrRadiologist, IsPlatformAdmin
from annotations.api.service_auth import IsAllowedService
from annotations.errors import DomainError
from annotations.models import Prediction, PredictionRating
from annotations.selectors import (
    model_version_for_ls_project,
    model_version_gate,
    model_version_segmenter,
    project_for_ls_project,
    reader_of,
)
from annotations.services import projects
from annotations.services.feedback import (
    feedback_summary,
    mask_feedback_summary,
    prediction_rate,
)
from annotations.services.model_registry import version_file_open
from annotations.services.service_accounts import ML_BACKEND
from annotations.services.training_requests import training_request_from_label_studio


class RatingSerializer(serializers.Serializer):
    useful = serializers.BooleanField()
    comment = serializers.CharField(required=False, allow_blank=True, max_length=2000)


class ProjectFeedback(APIView):
    permission_classes = [IsPlatformAdmin]

    @extend_schema(responses={200: {"type": "object"}})
    def get(self, request, slug: str):
        project = projects.project_get(slug)
        ratings = PredictionRating.objects.filter(prediction__image__project=project
                                                  ).select_related("reader", "prediction")
        return Response({
            "implicit": feedback_summary(project),
            "masks": mask_feedback_summary(project),
            "ratings": [{"prediction": r.prediction_id, "image": r.prediction.image.pseudo_id,
                         "model_version": r.prediction.model_version, "reader": r.reader.code,
                         "useful": r.useful, "comment": r.comment, "created_at": r.created_at}
                        for r in ratings.select_related("prediction__image")],
        })


class PredictionRate(APIView):
    permission_classes = [IsAdminOrRadiologist]

    @extend_schema(request=RatingSerializer, responses={200: RatingSerializer})
    def post(self, request, pk: int):
        reader = reader_of(request.user)
        if reader is None:
            raise DomainError("forbidden", "only radiologists rate predictions")
        data = RatingSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        rating = prediction_rate(prediction=get_object_or_404(Prediction, pk=pk), reader=reader,
                                 **data.validated_data)
        return Response({"useful": rating.useful, "comment": rating.comment})


class TrainingRequestFromLabelStudio(APIView):
    """Called by the ML backend when Label Studio's "Start training" is pressed.

    The one endpoint the ``ml-backend`` service token may call (admins may too).
    """

    permission_classes = [IsPlatformAdmin | IsAllowedService]
    allowed_services = (ML_BACKEND,)

    @extend_schema(request={"application/json": {"type": "object"}},
                   responses={202: {"type": "object"}})
    def post(self, request):
        body = request.data if isinstance(request.data, Mapping) else {}
        try:
            ls_project = int(body.get("ls_project_id"))
        except (TypeError, ValueError) as exc:
            raise DomainError("invalid", "ls_project_id must be an integer") from exc
        req = training_request_from_label_studio(ls_project_id=ls_project, actor=request.user)
        return Response({"status": "accepted", "training_request": req.pk,
                         "project": req.project.slug}, status=202)


class ModelVersionFile(APIView):
    """One file of a registered model version (``config.yaml``, ``model.pth``,
    ``manifest.sha256``), streamed from the models store: how an ML backend that shares
    no folder with the platform (S3 stores, another host) gets the versions it serves.
    It verifies them against the registry's digest before loading.  The ``ml-backend``
    service token may call it (admins may too)."""

    permission_classes = [IsPlatformAdmin | IsAllowedService]
    allowed_services = (ML_BACKEND,)

    @extend_schema(responses={(200, "application/octet-stream"): bytes})
    def get(self, request, name: str, filename: str):
        stored = version_file_open(name=name, filename=filename)
        return FileResponse(stored, content_type="application/octet-stream")


class ModelForLabelStudioProject(APIView):
    """Which model serves a Label Studio project: its platform project's promoted
    version in the registry (the only truth), with the version's manifest digest
    so the ML backend verifies the files it loads against the registry.

    Read-only; the ``ml-backend`` service token may call it (admins may too).
    404 when no workspace has that Label Studio project or nothing is promoted.
    """

    permission_classes = [IsPlatformAdmin | IsAllowedService]
    allowed_services = (ML_BACKEND,)

    @extend_schema(responses={200: {"type": "object"}})
    def get(self, request, ls_project_id: int):
        project = project_for_ls_project(ls_project_id)
        version = model_version_for_ls_project(ls_project_id)
        segmenter = model_version_segmenter(project) if project else None
        if version is None and segmenter is None:
            raise DomainError("not_found", f"no promoted model for Label Studio project "
                              f"{ls_project_id}")
        classifier = model_version_gate(project) if version else None
        # the two-stage gate, when the project has it on and a classifier to gate with
        gate = {"classifier": classifier.name, "sha256": classifier.sha256,
                "threshold": project.two_stage_threshold,
                "rescale": project.two_stage_rescale} if classifier else None
        # the mask model pre-paints beside the detector's boxes (or alone)
        masks = {"segmenter": segmenter.name, "sha256": segmenter.sha256} \
            if segmenter else None
        return Response({"ls_project_id": ls_project_id, "project": project.slug,
                         "model_version": version.name if version else None,
                         "sha256": version.sha256 if version else None,
                         "two_stage": gate, "masks": masks})
