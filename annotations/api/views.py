"""API views: authentication, role checks, then one service or selector call."""

from __future__ import annotations

from django.http import FileResponse, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from annotations import selectors
from annotations.api import serializers as s
from annotations.api.permissions import IsPlatformAdmin, ReadOnlyForRadiologists
from annotations.errors import DomainError
from annotations.models import AuditEvent, Image, IngestBatch, IngestItem, Reader
from annotations.services import accounts, ingest, projects, readers, signing, storage


class AuthToken(APIView):
    """Exchange a username and password for an API token that expires.

    Throttled per username and client address (429 with ``Retry-After``); the
    response says when the token expires (``CXR_TOKEN_TTL_HOURS``).
    """

    authentication_classes: list = []
    permission_classes = [AllowAny]
    parser_classes = [JSONParser, FormParser, MultiPartParser]

    @extend_schema(request=s.AuthTokenRequestSerializer, responses=s.AuthTokenSerializer)
    def post(self, request):
        data = s.AuthTokenRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = accounts.sign_in(ip=accounts.client_address(request.META),
                                **data.validated_data)
        token, expires_at = accounts.token_issue(user)
        return Response(s.AuthTokenSerializer({"token": token.key,
                                               "expires_at": expires_at}).data)


class ProjectListCreate(generics.ListAPIView):
    permission_classes = [ReadOnlyForRadiologists]
    serializer_class = s.ProjectSerializer

    def get_queryset(self):
        return selectors.project_list_visible(self.request.user).prefetch_related("label_classes")

    @extend_schema(request=s.ProjectCreateSerializer, responses=s.ProjectSerializer)
    def post(self, request):
        data = s.ProjectCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        project = projects.project_create(actor=request.user, **data.validated_data)
        return Response(s.ProjectSerializer(project).data, status=status.HTTP_201_CREATED)


class ProjectDetail(generics.RetrieveAPIView):
    """A project; PATCH changes its settings through ``projects.project_update``,
    which validates the consensus strategy and its parameters (an invalid one
    would fail every automatic consensus run) and refuses fixed fields."""

    permission_classes = [ReadOnlyForRadiologists]
    serializer_class = s.ProjectSerializer
    lookup_field = "slug"
    http_method_names = ["get", "patch", "head", "options"]

    def get_queryset(self):
        return selectors.project_list_visible(self.request.user)

    @extend_schema(request=s.ProjectUpdateSerializer, responses=s.ProjectSerializer)
    def patch(self, request, slug: str):
        project = self.get_object()
        data = s.ProjectUpdateSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        project = projects.project_update(project=project, actor=request.user,
                                          **data.validated_data)
        return Response(s.ProjectSerializer(project).data)


class ProjectImageList(generics.ListAPIView):
    permission_classes = [ReadOnlyForRadiologists]
    serializer_class = s.ImageSerializer

    def get_queryset(self):
        project = get_object_or_404(selectors.project_list_visible(self.request.user),
                                    slug=self.kwargs["slug"])
        return selectors.image_list_visible(self.request.user, project).select_related(
            "study", "project")


class ImageDetail(generics.RetrieveAPIView):
    permission_classes = [ReadOnlyForRadiologists]
    serializer_class = s.ImageSerializer
    lookup_field = "pseudo_id"
    lookup_url_kwarg = "image_id"

    def get_queryset(self):
        return selectors.image_list_visible(self.request.user).select_related("study", "project")


class ProjectUpload(APIView):
    """Upload DICOM/PNG/JPEG files (multipart field ``files``); ingest runs in tasks."""

    permission_classes = [IsPlatformAdmin]
    parser_classes = [MultiPartParser]

    @extend_schema(request={"multipart/form-data": {"type": "object", "properties": {
        "files": {"type": "array", "items": {"type": "string", "format": "binary"}}}}},
        responses={202: s.IngestBatchSerializer})
    def post(self, request, slug: str):
        project = projects.project_get(slug)
        files = request.FILES.getlist("files")
        if not files:
            raise DomainError("invalid_upload", "send one or more files in the field 'files'")
        batch = ingest.ingest_batch_from_uploads(project=project, files=files, actor=request.user)
        return Response(s.IngestBatchSerializer(batch).data, status=status.HTTP_202_ACCEPTED)


class IngestBatchDetail(generics.RetrieveAPIView):
    permission_classes = [IsPlatformAdmin]
    serializer_class = s.IngestBatchSerializer
    queryset = IngestBatch.objects.select_related("project")


class IngestBatchItems(generics.ListAPIView):
    permission_classes = [IsPlatformAdmin]
    serializer_class = s.IngestItemSerializer

    def get_queryset(self):
        return IngestItem.objects.filter(batch_id=self.kwargs["pk"]).select_related("image")


class ProjectQuarantine(generics.ListAPIView):
    """Files that were not imported, with the reason (admins only)."""

    permission_classes = [IsPlatformAdmin]
    serializer_class = s.IngestItemSerializer

    def get_queryset(self):
        return IngestItem.objects.filter(
            batch__project__slug=self.kwargs["slug"],
            status__in=[IngestItem.Status.QUARANTINED, IngestItem.Status.FAILED],
        ).order_by("-id")


class ReaderListCreate(generics.ListAPIView):
    permission_classes = [IsPlatformAdmin]
    serializer_class = s.ReaderSerializer
    queryset = Reader.objects.select_related("user")

    @extend_schema(request=s.ReaderCreateSerializer, responses=s.ReaderSerializer)
    def post(self, request):
        data = s.ReaderCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        reader = readers.reader_create(actor=request.user, **data.validated_data)
        return Response(s.ReaderSerializer(reader).data, status=status.HTTP_201_CREATED)


class ProjectAssign(APIView):
    """Assign the project's unassigned images to k readers each."""

    permission_classes = [IsPlatformAdmin]

    @extend_schema(request=None, responses={201: s.AssignmentSerializer(many=True)})
    def post(self, request, slug: str):
        project = projects.project_get(slug)
        created = readers.assignments_create(project=project, actor=request.user)
        return Response(s.AssignmentSerializer(created, many=True).data, status=201)


class MyAssignments(generics.ListAPIView):
    permission_classes = [IsAuthenticated]
    serializer_class = s.AssignmentSerializer

    def get_queryset(self):
        return selectors.assignment_list_for(self.request.user)


class Me(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(responses={200: {"type": "object"}})
    def get(self, request):
        reader = selectors.reader_of(request.user)
        role = "admin" if selectors.is_admin(request.user) else (
            "radiologist" if reader else "none")
        return Response({"username": request.user.username, "role": role,
                         "reader_code": reader.code if reader else None})


class AuditList(generics.ListAPIView):
    permission_classes = [IsPlatformAdmin]
    serializer_class = s.AuditEventSerializer
    queryset = AuditEvent.objects.select_related("actor", "project")


def image_file(request: HttpRequest, image_id: str, variant: str) -> HttpResponse:
    """Serve a display PNG or thumbnail to whoever holds a valid signed URL."""
    try:
        signing.verify(image_id, variant, request.GET.get("exp"), request.GET.get("sig"))
    except DomainError as exc:
        return JsonResponse({"error": exc.as_dict()}, status=403)
    image = Image.objects.filter(pseudo_id=image_id).first()
    if image is None:
        return JsonResponse({"error": {"code": "not_found", "message": "no such image"}},
                            status=404)
    rel = image.display_path if variant == "display" else image.thumbnail_path
    try:
        stored = storage.open_read(storage.MEDIA, rel)
    except DomainError as exc:
        return JsonResponse({"error": exc.as_dict()}, status=404)
    response = FileResponse(stored, content_type="image/png")
    response["Cache-Control"] = "private, max-age=300"
    origin = request.headers.get("Origin")
    from django.conf import settings

    if origin and origin in settings.IMAGE_CORS_ORIGINS:
        response["Access-Control-Allow-Origin"] = origin
        response["Vary"] = "Origin"
    return response


def health(request: HttpRequest) -> JsonResponse:
    """Liveness for load balancers; says nothing about data."""
    return JsonResponse({"status": "ok"})
