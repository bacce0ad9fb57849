"""Label Studio integration endpoints: the webhook receiver, pushes, reconcile,
protocol violations and the radiologist's own workspaces."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpResponseRedirect
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from annotations.api.permissions import IsPlatformAdmin
from annotations.errors import DomainError
from annotations.models import ProtocolViolation, Workspace
from annotations.selectors import reader_of
from annotations.services import label_studio_sync as sync
from annotations.services import my_reading, projects
from annotations.services.webhooks import webhook_receive, webhook_refused


class LabelStudioWebhook(APIView):
    """Receives one workspace's Label Studio webhooks; authenticated by that workspace's
    own secret header (no session, no token: Label Studio is the caller)."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(request={"application/json": {"type": "object"}},
                   responses={200: {"type": "object"}})
    def post(self, request, workspace_id: int):
        secret = request.headers.get(settings.LABEL_STUDIO_WEBHOOK_HEADER)
        if webhook_refused(workspace_id=workspace_id, body=request.body, secret=secret):
            # answered, not raised: the record of the refusal must survive the request
            return Response({"error": {"code": "forbidden",
                                       "message": "missing or wrong webhook secret"}},
                            status=403)
        event, created = webhook_receive(workspace_id=workspace_id, body=request.body,
                                         secret=secret)
        return Response({"event": event.pk, "duplicate": not created})


class LabelStudioPush(APIView):
    """Provision readers and workspaces, push assignments and adjudication cases."""

    permission_classes = [IsPlatformAdmin]

    @extend_schema(request=None, responses={200: {"type": "object"}})
    def post(self, request, slug: str):
        project = projects.project_get(slug)
        client = sync.ls_client()
        return Response({"tasks": sync.assignments_push(project, client),
                         "adjudications": sync.adjudications_push(project, client)})


class LabelStudioReconcile(APIView):
    permission_classes = [IsPlatformAdmin]

    @extend_schema(request=None, responses={200: {"type": "object"}})
    def post(self, request):
        """One reconcile pass now (recorded as a run); its counts and failed workspaces."""
        run = sync.reconcile_run_create(actor=request.user, dispatch=False)
        run = sync.reconcile_run_execute(run_id=run.pk)
        return Response({"run": run.pk, "status": run.status, "reason": run.reason,
                         **run.stats, "failed_workspaces": run.failed_workspaces})


class ViolationSerializer(serializers.ModelSerializer):
    image = serializers.CharField(source="image.pseudo_id")
    workspace_reader = serializers.CharField(source="workspace.reader.code")
    actual_reader = serializers.CharField(source="actual_reader.code", default=None)

    class Meta:
        model = ProtocolViolation
        fields = ["id", "kind", "image", "workspace_reader", "actual_reader", "ls_user_id",
                  "ls_annotation_id", "detail", "detected_at"]


class ProjectViolations(generics.ListAPIView):
    permission_classes = [IsPlatformAdmin]
    serializer_class = ViolationSerializer

    def get_queryset(self):
        return ProtocolViolation.objects.filter(
            workspace__project__slug=self.kwargs["slug"]).select_related(
            "image", "workspace__reader", "actual_reader")


class MyWorkspaces(APIView):
    """A radiologist's workspaces: where to read, how much is left."""

    permission_classes = [IsAuthenticated]

    @extend_schema(responses={200: {"type": "array", "items": {"type": "object"}}})
    def get(self, request):
        reader = reader_of(request.user)
        if reader is None:
            return Response([])
        rows = my_reading.my_workspaces(reader)
        return Response(rows)


class MyWorkspaceOpen(APIView):
    """Sign the radiologist in to their own Label Studio workspace (one-time link).

    The platform's session is the only credential a reader holds; this turns it into a
    Label Studio session for that one workspace.  Anyone else's workspace is a 404.
    """

    permission_classes = [IsAuthenticated]

    @extend_schema(request=None, responses={302: None})
    def get(self, request, workspace_id: int):
        reader = reader_of(request.user)
        ws = Workspace.objects.filter(pk=workspace_id).select_related("project").first()
        if reader is None or ws is None:
            raise DomainError("not_found", "no such workspace", status=404)
        return HttpResponseRedirect(sync.workspace_sign_in_url(workspace=ws, reader=reader))
