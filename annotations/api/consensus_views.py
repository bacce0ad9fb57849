"""Consensus runs, agreement, imports and exports (admins only: readers never see
each other's work or the consensus through these endpoints)."""

from __future__ import annotations

from django.http import HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.parsers import JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from annotations.api.permissions import IsPlatformAdmin
from annotations.errors import DomainError
from annotations.models import ConsensusRun
from annotations.services import exports, imports, mask_exports, projects
from annotations.services.agreement import agreement_report
from annotations.services.consensus import consensus_results, consensus_run_create
from annotations.services.ctr_report import ctr_report


class ConsensusRunSerializer(serializers.ModelSerializer):
    project = serializers.CharField(source="project.slug", read_only=True)
    n_annotations = serializers.IntegerField(source="annotations.count", read_only=True)

    class Meta:
        model = ConsensusRun
        fields = ["id", "project", "strategy", "params", "status", "reason", "trigger",
                  "image_scope", "digest", "stats", "n_annotations", "created_at",
                  "finished_at"]


class ConsensusRunCreateSerializer(serializers.Serializer):
    strategy = serializers.CharField(required=False)
    params = serializers.DictField(required=False)


class ConsensusRunListCreate(generics.ListAPIView):
    permission_classes = [IsPlatformAdmin]
    serializer_class = ConsensusRunSerializer

    def get_queryset(self):
        return ConsensusRun.objects.filter(project__slug=self.kwargs["slug"]).select_related(
            "project")

    @extend_schema(request=ConsensusRunCreateSerializer, responses={202: ConsensusRunSerializer})
    def post(self, request, slug: str):
        data = ConsensusRunCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        run = consensus_run_create(project=projects.project_get(slug), actor=request.user,
                                   **data.validated_data)
        return Response(ConsensusRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)


class ConsensusRunDetail(APIView):
    permission_classes = [IsPlatformAdmin]

    @extend_schema(responses={200: ConsensusRunSerializer})
    def get(self, request, pk: int):
        run = get_object_or_404(ConsensusRun.objects.select_related("project"), pk=pk)
        body = ConsensusRunSerializer(run).data
        if run.status == ConsensusRun.Status.DONE:
            body["results"] = {k: v.to_dict() for k, v in sorted(consensus_results(run).items())}
        return Response(body)


class Agreement(APIView):
    permission_classes = [IsPlatformAdmin]

    @extend_schema(parameters=[
        OpenApiParameter("run", int, description="consensus run for reader-vs-consensus"),
        OpenApiParameter("iou", float, description="IoU threshold (default 0.4)"),
        OpenApiParameter("images", str, description="comma-separated image ids (subset)"),
    ], responses={200: {"type": "object"}})
    def get(self, request, slug: str):
        project = projects.project_get(slug)
        run = None
        if request.query_params.get("run"):
            try:
                run_id = int(request.query_params["run"])
            except ValueError as exc:
                raise DomainError("invalid", "run must be an integer") from exc
            run = get_object_or_404(ConsensusRun, pk=run_id, project=project,
                                    status=ConsensusRun.Status.DONE)
        try:
            iou = float(request.query_params.get("iou", 0.4))
        except ValueError as exc:
            raise DomainError("invalid", "iou must be a number") from exc
        images = request.query_params.get("images")
        subset = [i for i in images.split(",") if i] if images else None
        return Response(agreement_report(project=project, run=run, image_ids=subset,
                                         iou_thr=iou))


class AnnotationImport(APIView):
    """Import reads from a file (multipart: ``file`` and ``format``)."""

    permission_classes = [IsPlatformAdmin]
    parser_classes = [MultiPartParser, JSONParser]
    #: Imports are parsed in memory: the upload is capped while it streams in.
    upload_max_file_setting = "IMPORT_MAX_BYTES"

    @extend_schema(request={"multipart/form-data": {"type": "object", "properties": {
        "file": {"type": "string", "format": "binary"}, "format": {"type": "string"},
        "reader": {"type": "string"}}}},
        responses={201: {"type": "object"}})
    def post(self, request, slug: str):
        upload = request.FILES.get("file")
        if upload is None:
            raise DomainError("invalid_upload", "send the file in the field 'file'")
        files = imports.import_files_from_upload(upload.read(), upload.name or "upload")
        summary = imports.annotations_import(
            project=projects.project_get(slug), fmt=request.data.get("format", "vinbigdata"),
            files=files, reader=request.data.get("reader") or None, actor=request.user)
        return Response(summary, status=status.HTTP_201_CREATED)


class CtrReport(APIView):
    """The cardiothoracic ratio of every image with final heart and lung masks, flagged
    above the project's threshold, against the readers' cardiomegaly labels."""

    permission_classes = [IsPlatformAdmin]

    @extend_schema(responses={200: {"type": "object"}})
    def get(self, request, slug: str):
        return Response(ctr_report(projects.project_get(slug)))


class MaskExport(APIView):
    """The final masks (or one consensus run's) as COCO (RLE), PNG masks or DICOM
    Segmentation objects."""

    permission_classes = [IsPlatformAdmin]

    @extend_schema(parameters=[
        OpenApiParameter("run", int, description="one consensus run's masks (default: the "
                                                 "final masks)"),
    ], responses={200: {"type": "string", "format": "binary"}})
    def get(self, request, slug: str, fmt: str):
        project = projects.project_get(slug)
        try:
            run_id = int(request.query_params["run"]) if request.query_params.get("run") else None
        except ValueError as exc:
            raise DomainError("invalid", "run must be an integer") from exc
        out = mask_exports.masks_export(project=project, fmt=fmt, run_id=run_id,
                                        actor=request.user)
        response = HttpResponse(out.content, content_type=out.content_type)
        response["Content-Disposition"] = f'attachment; filename="{out.filename}"'
        return response


class AnnotationExport(APIView):
    permission_classes = [IsPlatformAdmin]

    @extend_schema(parameters=[
        OpenApiParameter("source", str, enum=["final", "consensus", "readers"],
                         description="final (default): adjudicated label, else consensus"),
        OpenApiParameter("run", int, description="consensus run (default: the latest)"),
        OpenApiParameter("reader", str, description="with source=readers: one reader only"),
    ], responses={200: {"type": "string", "format": "binary"}})
    def get(self, request, slug: str, fmt: str):
        project = projects.project_get(slug)
        source = request.query_params.get("source", "final")
        try:
            run_id = int(request.query_params["run"]) if request.query_params.get("run") else None
        except ValueError as exc:
            raise DomainError("invalid", "run must be an integer") from exc
        out = exports.annotations_export_stream(
            project=project, fmt=fmt, source=source, run_id=run_id,
            reader=request.query_params.get("reader") or None, actor=request.user)
        response = StreamingHttpResponse(out.chunks, content_type=out.content_type)
        response["Content-Disposition"] = f'attachment; filename="{out.filename}"'
        return response
