"""Django admin registrations (a fallback console for admins)."""

from django.contrib import admin

from annotations import models as m


class LabelClassInline(admin.TabularInline):
    model = m.LabelClass
    extra = 0


@admin.register(m.Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "readers_per_image", "consensus_strategy", "show_prelabels"]
    inlines = [LabelClassInline]


@admin.register(m.Study)
class StudyAdmin(admin.ModelAdmin):
    list_display = ["pseudo_id", "project", "patient_pseudo_id", "created_at"]
    list_filter = ["project"]


@admin.register(m.Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = ["pseudo_id", "project", "width", "height", "modality", "view_position"]
    list_filter = ["project", "modality"]
    search_fields = ["pseudo_id"]


@admin.register(m.Reader)
class ReaderAdmin(admin.ModelAdmin):
    list_display = ["code", "user", "active"]


@admin.register(m.Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    list_display = ["image", "reader", "status", "created_at"]
    list_filter = ["status", "reader"]


class AnnotationBoxInline(admin.TabularInline):
    model = m.AnnotationBox
    extra = 0


@admin.register(m.ReaderAnnotation)
class ReaderAnnotationAdmin(admin.ModelAdmin):
    list_display = ["image", "reader", "version", "is_current", "source", "excluded_reason"]
    list_filter = ["source", "is_current"]
    inlines = [AnnotationBoxInline]


@admin.register(m.IngestBatch)
class IngestBatchAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "source", "status", "created_at"]


@admin.register(m.IngestItem)
class IngestItemAdmin(admin.ModelAdmin):
    list_display = ["batch", "seq", "status", "reason"]
    list_filter = ["status", "reason"]


@admin.register(m.AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["created_at", "actor", "action", "project", "target_type", "target_id"]
    list_filter = ["action"]

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
