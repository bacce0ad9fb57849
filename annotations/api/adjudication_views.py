"""Adjudication queue and decisions (admins and adjudicators)."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from annotations.api.permissions import IsAdminOrAdjudicator, IsPlatformAdmin
from annotations.errors import DomainError
from annotations.models import Adjudication, ConsensusImage, Reader
from annotations.selectors import adjudications_visible_to, reader_of
from annotations.services.adjudication import adjudication_decide, project_adjudicator_add
from annotations.services.annotating import BoxIn
from annotations.services.consensus import reads_from_annotations
from annotations.services.projects import project_get


class AdjudicationSerializer(serializers.ModelSerializer):
    image = serializers.CharField(source="image.pseudo_id", read_only=True)
    adjudicator = serializers.CharField(source="adjudicator.code", default=None, read_only=True)

    class Meta:
        model = Adjudication
        fields = ["id", "image", "agreement", "status", "consensus_run", "adjudicator",
                  "created_at", "decided_at"]


class BoxSerializer(serializers.Serializer):
    label = serializers.CharField()
    x_min = serializers.FloatField()
    y_min = serializers.FloatField()
    x_max = serializers.FloatField()
    y_max = serializers.FloatField()


class DecisionSerializer(serializers.Serializer):
    boxes = BoxSerializer(many=True)
    image_labels = serializers.ListField(child=serializers.CharField(), required=False)


class AdjudicationList(generics.ListAPIView):
    """A project's cases: all of them for admins; for an adjudicator only the cases they
    may decide (projects they adjudicate, images they did not read)."""

    permission_classes = [IsAdminOrAdjudicator]
    serializer_class = AdjudicationSerializer

    def get_queryset(self):
        qs = adjudications_visible_to(self.request.user).filter(
            project__slug=self.kwargs["slug"]).select_related("image", "adjudicator")
        status = self.request.query_params.get("status")
        return qs.filter(status=status) if status else qs


class AdjudicationDetail(APIView):
    """The case: every reader's read and the consensus, in original pixels."""

    permission_classes = [IsAdminOrAdjudicator]

    @extend_schema(responses={200: AdjudicationSerializer})
    def get(self, request, pk: int):
        adj = get_object_or_404(adjudications_visible_to(request.user).select_related("image"),
                                pk=pk)
        reads = reads_from_annotations(list(adj.image.annotations.filter(
            is_current=True, excluded_reason="").exclude(source="adjudication")))
        body = AdjudicationSerializer(adj).data
        body["reads"] = [
            {"reader": r.reader, "boxes": r.boxes.tolist(), "classes": r.classes.tolist(),
             "image_labels": sorted(r.image_labels)}
            for im in reads for r in im.reads
        ]
        row = ConsensusImage.objects.filter(run=adj.consensus_run, image=adj.image).first()
        body["consensus"] = None if row is None else {
            "image_labels": row.image_labels,
            "boxes": [{"label": b.label_class.name, "score": b.score, "support": b.support,
                       "box": [b.x_min, b.y_min, b.x_max, b.y_max]}
                      for b in row.boxes.select_related("label_class")],
        }
        return Response(body)


class AdjudicationDecide(APIView):
    permission_classes = [IsAdminOrAdjudicator]

    @extend_schema(request=DecisionSerializer, responses={200: AdjudicationSerializer})
    def post(self, request, pk: int):
        adj = get_object_or_404(adjudications_visible_to(request.user), pk=pk)
        reader = reader_of(request.user)
        if reader is None:
            raise DomainError("forbidden", "only adjudicators can decide")
        data = DecisionSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        boxes = [BoxIn(b["label"], b["x_min"], b["y_min"], b["x_max"], b["y_max"])
                 for b in data.validated_data["boxes"]]
        adj = adjudication_decide(adjudication=adj, adjudicator=reader, boxes=boxes,
                                  image_labels=data.validated_data.get("image_labels", []),
                                  actor=request.user)
        return Response(AdjudicationSerializer(adj).data)


class AdjudicatorAddSerializer(serializers.Serializer):
    code = serializers.CharField(max_length=32)


class ProjectAdjudicators(APIView):
    """Who adjudicates a project (admins only)."""

    permission_classes = [IsPlatformAdmin]

    @extend_schema(responses={200: {"type": "array", "items": {"type": "string"}}})
    def get(self, request, slug: str):
        project = project_get(slug)
        return Response(list(project.adjudicators.order_by("code").values_list("code",
                                                                                flat=True)))

    @extend_schema(request=AdjudicatorAddSerializer,
                   responses={200: {"type": "array", "items": {"type": "string"}}})
    def post(self, request, slug: str):
        project = project_get(slug)
        data = AdjudicatorAddSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        reader = Reader.objects.filter(code=data.validated_data["code"]).first()
        if reader is None:
            raise DomainError("not_found", "no such reader", status=404)
        project_adjudicator_add(project=project, reader=reader, actor=request.user)
        return self.get(request, slug)
