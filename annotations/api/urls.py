from django.urls import path
from rest_framework.authtoken.views import obtain_auth_token

from annotations.api import adjudication_views as av
from annotations.api import consensus_views as cv
from annotations.api import feedback_views as fv
from annotations.api import label_studio_views as lsv
from annotations.api import model_views as mv
from annotations.api import views as v

urlpatterns = [
    path("auth/token/", obtain_auth_token, name="api-token"),
    path("me/", v.Me.as_view(), name="me"),
    path("me/assignments/", v.MyAssignments.as_view(), name="my-assignments"),
    path("projects/", v.ProjectListCreate.as_view(), name="project-list"),
    path("projects/<slug:slug>/", v.ProjectDetail.as_view(), name="project-detail"),
    path("projects/<slug:slug>/images/", v.ProjectImageList.as_view(), name="project-images"),
    path("projects/<slug:slug>/uploads/", v.ProjectUpload.as_view(), name="project-upload"),
    path("projects/<slug:slug>/quarantine/", v.ProjectQuarantine.as_view(),
         name="project-quarantine"),
    path("projects/<slug:slug>/assignments/", v.ProjectAssign.as_view(),
         name="project-assign"),
    path("projects/<slug:slug>/consensus-runs/", cv.ConsensusRunListCreate.as_view(),
         name="consensus-runs"),
    path("consensus-runs/<int:pk>/", cv.ConsensusRunDetail.as_view(), name="consensus-run"),
    path("projects/<slug:slug>/agreement/", cv.Agreement.as_view(), name="agreement"),
    path("projects/<slug:slug>/imports/", cv.AnnotationImport.as_view(), name="imports"),
    path("projects/<slug:slug>/exports/<str:fmt>/", cv.AnnotationExport.as_view(),
         name="exports"),
    path("projects/<slug:slug>/adjudications/", av.AdjudicationList.as_view(),
         name="adjudications"),
    path("adjudications/<int:pk>/", av.AdjudicationDetail.as_view(), name="adjudication"),
    path("adjudications/<int:pk>/decision/", av.AdjudicationDecide.as_view(),
         name="adjudication-decide"),
    path("label-studio/webhook/", lsv.LabelStudioWebhook.as_view(), name="ls-webhook"),
    path("label-studio/reconcile/", lsv.LabelStudioReconcile.as_view(), name="ls-reconcile"),
    path("projects/<slug:slug>/label-studio/push/", lsv.LabelStudioPush.as_view(),
         name="ls-push"),
    path("projects/<slug:slug>/violations/", lsv.ProjectViolations.as_view(),
         name="violations"),
    path("me/workspaces/", lsv.MyWorkspaces.as_view(), name="my-workspaces"),
    path("projects/<slug:slug>/feedback/", fv.ProjectFeedback.as_view(), name="feedback"),
    path("ml/training-requests/", fv.TrainingRequestFromLabelStudio.as_view(),
         name="ml-training-request"),
    path("predictions/<int:pk>/rating/", fv.PredictionRate.as_view(), name="prediction-rate"),
    path("projects/<slug:slug>/training-runs/", mv.TrainingRunListCreate.as_view(),
         name="training-runs"),
    path("training-runs/<int:pk>/", mv.TrainingRunDetail.as_view(), name="training-run"),
    path("training-runs/<int:pk>/cancel/", mv.TrainingRunCancel.as_view(),
         name="training-run-cancel"),
    path("projects/<slug:slug>/model-versions/", mv.ModelVersionList.as_view(),
         name="model-versions"),
    path("projects/<slug:slug>/model-versions/rollback/", mv.ModelRollback.as_view(),
         name="model-rollback"),
    path("model-versions/<str:name>/promote/", mv.ModelVersionPromote.as_view(),
         name="model-promote"),
    path("images/<str:image_id>/", v.ImageDetail.as_view(), name="image-detail"),
    path("ingest-batches/<int:pk>/", v.IngestBatchDetail.as_view(), name="ingest-batch"),
    path("ingest-batches/<int:pk>/items/", v.IngestBatchItems.as_view(),
         name="ingest-batch-items"),
    path("readers/", v.ReaderListCreate.as_view(), name="reader-list"),
    path("audit/", v.AuditList.as_view(), name="audit-list"),
]
