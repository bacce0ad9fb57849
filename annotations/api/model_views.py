"""Training runs and the model registry (admins start, cancel, promote, roll back)."""

from __future__ import annotations

from collections.abc import Mapping

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from annotations.api.permissions import IsPlatformAdmin
from annotations.errors import DomainError
from annotations.models import ActiveLearningRound, ModelVersion, TrainingRun
from annotations.services import active_learning, model_registry, projects, training


class TrainingRunSerializer(serializers.ModelSerializer):
    project = serializers.CharField(source="project.slug", read_only=True)
    model_version = serializers.CharField(source="model_version.name", default=None,
                                          read_only=True)

    class Meta:
        model = TrainingRun
        fields = ["id", "project", "status", "params", "progress", "reason", "cancel_requested",
                  "model_version", "created_at", "started_at", "finished_at"]


class ModelVersionSerializer(serializers.ModelSerializer):
    parent = serializers.CharField(source="parent.name", default=None, read_only=True)
    promoted_by = serializers.CharField(source="promoted_by.username", default=None,
                                        read_only=True)
    n_train_images = serializers.SerializerMethodField()
    training_params = serializers.JSONField(source="training_run.params", default=None,
                                            read_only=True)

    class Meta:
        model = ModelVersion
        fields = ["name", "kind", "sha256", "parent", "metrics", "promoted", "promoted_by",
                  "promoted_at", "n_train_images", "training_params", "created_at"]

    def get_n_train_images(self, obj: ModelVersion) -> int:
        return len(obj.train_images)


class TrainingRunListCreate(generics.ListAPIView):
    permission_classes = [IsPlatformAdmin]
    serializer_class = TrainingRunSerializer

    def get_queryset(self):
        return TrainingRun.objects.filter(project__slug=self.kwargs["slug"]).select_related(
            "project", "model_version")

    @extend_schema(request={"application/json": {"type": "object"}},
                   responses={202: TrainingRunSerializer})
    def post(self, request, slug: str):
        body = request.data
        params = body.get("params") if isinstance(body, Mapping) else None
        if not isinstance(body, Mapping) or not isinstance(params, Mapping | None):
            raise DomainError("invalid", 'send a JSON object: {"params": {...}}')
        run = training.training_run_create(project=projects.project_get(slug),
                                           params=dict(params or {}) or None,
                                           actor=request.user)
        return Response(TrainingRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)


class TrainingRunDetail(generics.RetrieveAPIView):
    permission_classes = [IsPlatformAdmin]
    serializer_class = TrainingRunSerializer
    queryset = TrainingRun.objects.select_related("project", "model_version")


class TrainingRunCancel(APIView):
    permission_classes = [IsPlatformAdmin]

    @extend_schema(request=None, responses={200: TrainingRunSerializer})
    def post(self, request, pk: int):
        run = training.training_run_cancel(run=get_object_or_404(TrainingRun, pk=pk),
                                           actor=request.user)
        return Response(TrainingRunSerializer(run).data)


class ModelVersionList(generics.ListAPIView):
    permission_classes = [IsPlatformAdmin]
    serializer_class = ModelVersionSerializer

    def get_queryset(self):
        return ModelVersion.objects.filter(project__slug=self.kwargs["slug"]).select_related(
            "parent", "promoted_by", "training_run")


class ModelVersionPromote(APIView):
    """Force a promotion (an admin's decision, recorded with who made it)."""

    permission_classes = [IsPlatformAdmin]

    @extend_schema(request=None, responses={200: ModelVersionSerializer})
    def post(self, request, name: str):
        version = get_object_or_404(ModelVersion, name=name)
        model_registry.version_promote(version=version, actor=request.user, reason="forced")
        version.refresh_from_db()
        return Response(ModelVersionSerializer(version).data)


class ModelRollback(APIView):
    permission_classes = [IsPlatformAdmin]

    @extend_schema(request=None, responses={200: ModelVersionSerializer},
                   parameters=[OpenApiParameter(
                       "kind", str, enum=ModelVersion.Kind.values,
                       description="detector (default), classifier or segmenter")])
    def post(self, request, slug: str):
        kind = request.query_params.get("kind", ModelVersion.Kind.DETECTOR)
        if kind not in ModelVersion.Kind.values:
            raise DomainError("invalid", f"kind must be one of {ModelVersion.Kind.values}")
        version = model_registry.version_rollback(project=projects.project_get(slug),
                                                  actor=request.user, kind=kind)
        version.refresh_from_db()
        return Response(ModelVersionSerializer(version).data)


class ActiveLearningRoundSerializer(serializers.ModelSerializer):
    model_version = serializers.CharField(source="model_version.name", default=None,
                                          read_only=True)

    class Meta:
        model = ActiveLearningRound
        fields = ["id", "number", "status", "reason", "strategy", "params", "budget",
                  "model_version", "selected", "scores", "labeled_before", "created_at",
                  "finished_at"]


class ActiveLearningRoundDetail(generics.RetrieveAPIView):
    """One round, as it goes (``status``: pending, running, done, failed, cancelled)."""

    permission_classes = [IsPlatformAdmin]
    serializer_class = ActiveLearningRoundSerializer
    queryset = ActiveLearningRound.objects.select_related("model_version")


class ActiveLearningRoundStart(serializers.Serializer):
    strategy = serializers.CharField()
    budget = serializers.IntegerField(min_value=1, max_value=10000)
    params = serializers.DictField(required=False)
    seed = serializers.IntegerField(required=False, default=0)


class ActiveLearningRounds(generics.ListAPIView):
    """Rounds so far (the learning curve: each round's model metrics), and Start round."""

    permission_classes = [IsPlatformAdmin]
    serializer_class = ActiveLearningRoundSerializer

    def get_queryset(self):
        return ActiveLearningRound.objects.filter(project__slug=self.kwargs["slug"]
                                                  ).select_related("model_version")

    @extend_schema(request=ActiveLearningRoundStart,
                   responses={202: ActiveLearningRoundSerializer})
    def post(self, request, slug: str):
        """Start a round: validated now, scored and assigned by a gpu worker (poll the
        list: the round's ``status``)."""
        data = ActiveLearningRoundStart(data=request.data)
        data.is_valid(raise_exception=True)
        rnd = active_learning.al_round_create(project=projects.project_get(slug),
                                              actor=request.user, **data.validated_data)
        return Response(ActiveLearningRoundSerializer(rnd).data, status=status.HTTP_202_ACCEPTED)
