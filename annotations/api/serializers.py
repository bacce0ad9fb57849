"""Serializers.  Output never includes secrets or patient identity."""

from __future__ import annotations

from rest_framework import serializers

from annotations.models import (
    Assignment,
    AuditEvent,
    Image,
    IngestBatch,
    IngestItem,
    LabelClass,
    MaskClass,
    Project,
    Reader,
)
from annotations.services.signing import image_url
from annotations.taxonomy import MASK_PRESETS, PRESETS, build_mask_classes, build_taxonomy


class LabelClassSerializer(serializers.ModelSerializer):
    class Meta:
        model = LabelClass
        fields = ["class_id", "name", "code", "color", "image_level"]


class MaskClassSerializer(serializers.ModelSerializer):
    class Meta:
        model = MaskClass
        fields = ["index", "name", "code", "color", "anatomy"]


class ProjectSerializer(serializers.ModelSerializer):
    label_classes = LabelClassSerializer(many=True, read_only=True)
    mask_classes = MaskClassSerializer(many=True, read_only=True)
    image_count = serializers.IntegerField(source="images.count", read_only=True)

    class Meta:
        model = Project
        fields = ["slug", "name", "description", "taxonomy_preset", "readers_per_image",
                  "consensus_strategy", "consensus_params", "show_prelabels", "clahe",
                  "allow_burned_in_annotation", "deid_retain_patient_characteristics",
                  "anatomy_policy", "display_long_side", "two_stage", "two_stage_threshold",
                  "two_stage_rescale", "ctr_threshold", "explanation_prelabels",
                  "label_classes", "mask_classes",
                  "image_count", "created_at"]
        read_only_fields = ["taxonomy_preset", "created_at"]


class ProjectCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    slug = serializers.SlugField(max_length=64, required=False)
    taxonomy_preset = serializers.ChoiceField(choices=sorted(PRESETS), required=False)
    class_names = serializers.ListField(child=serializers.CharField(max_length=100),
                                        required=False, allow_empty=True, max_length=200)
    #: image-level finding classes (multi-select per image), with or without box classes
    image_classes = serializers.ListField(child=serializers.CharField(max_length=100),
                                          required=False, allow_empty=True, max_length=200)
    #: structures painted as masks: the ``anatomy`` preset and/or names
    mask_preset = serializers.ChoiceField(choices=sorted(MASK_PRESETS), required=False)
    mask_classes = serializers.ListField(child=serializers.CharField(max_length=100),
                                         required=False, allow_empty=True, max_length=50)
    readers_per_image = serializers.IntegerField(min_value=1, max_value=20, default=3)
    description = serializers.CharField(required=False, allow_blank=True)
    show_prelabels = serializers.BooleanField(required=False)
    clahe = serializers.BooleanField(required=False)
    allow_burned_in_annotation = serializers.BooleanField(required=False)
    deid_retain_patient_characteristics = serializers.BooleanField(required=False)
    anatomy_policy = serializers.ChoiceField(choices=Project.AnatomyPolicy.values,
                                             required=False)
    display_long_side = serializers.IntegerField(min_value=128, max_value=4096, required=False)

    def validate(self, data: dict) -> dict:
        # Each class is stored under a code made of its name's letters and digits (unique
        # per project): names that differ only in punctuation, or have none, collide there;
        # build_taxonomy refuses those, duplicates and empty names with a DomainError.
        names, image = data.get("class_names") or [], data.get("image_classes") or []
        if names or image:
            build_taxonomy(names, image_classes=image)
        if data.get("mask_classes"):
            build_mask_classes(data["mask_classes"])
        return data


class ProjectUpdateSerializer(serializers.Serializer):
    """The settings ``projects.project_update`` may change; anything else is refused
    (not silently ignored), so a client learns that a field is fixed."""

    name = serializers.CharField(max_length=200)
    description = serializers.CharField(allow_blank=True)
    consensus_strategy = serializers.CharField(max_length=64)
    consensus_params = serializers.DictField()
    show_prelabels = serializers.BooleanField()
    clahe = serializers.BooleanField()
    adjudication_threshold = serializers.FloatField(min_value=0.0, max_value=1.0,
                                                    allow_null=True)
    adjudication_budget_per_week = serializers.IntegerField(min_value=1, max_value=100000,
                                                            allow_null=True)
    promotion_threshold = serializers.FloatField()
    auto_retrain_after = serializers.IntegerField(min_value=1, allow_null=True)
    anatomy_policy = serializers.ChoiceField(choices=Project.AnatomyPolicy.values)
    two_stage = serializers.BooleanField()
    two_stage_threshold = serializers.FloatField(min_value=0.0, max_value=1.0)
    two_stage_rescale = serializers.BooleanField()
    ctr_threshold = serializers.FloatField(min_value=0.3, max_value=0.8)
    explanation_prelabels = serializers.BooleanField()

    def validate(self, attrs: dict) -> dict:
        unknown = sorted(set(self.initial_data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError({k: "cannot be changed" for k in unknown})
        if not attrs:
            raise serializers.ValidationError("nothing to change")
        return attrs


class ImageSerializer(serializers.ModelSerializer):
    study = serializers.CharField(source="study.pseudo_id", read_only=True)
    project = serializers.CharField(source="project.slug", read_only=True)
    display_url = serializers.SerializerMethodField()
    thumbnail_url = serializers.SerializerMethodField()

    class Meta:
        model = Image
        fields = ["pseudo_id", "project", "study", "width", "height", "pixel_spacing_row",
                  "pixel_spacing_col", "modality", "view_position", "photometric",
                  "bits_stored", "source_format", "display_width", "display_height",
                  "display_url", "thumbnail_url", "created_at"]

    def get_display_url(self, obj: Image) -> str:
        return image_url(obj, "display")

    def get_thumbnail_url(self, obj: Image) -> str:
        return image_url(obj, "thumbnail")


class IngestItemSerializer(serializers.ModelSerializer):
    image = serializers.CharField(source="image.pseudo_id", default=None, read_only=True)

    class Meta:
        model = IngestItem
        fields = ["seq", "status", "reason", "detail", "image", "updated_at",
                  "quarantined_at", "original_purged_at"]


class IngestBatchSerializer(serializers.ModelSerializer):
    project = serializers.CharField(source="project.slug", read_only=True)
    counts = serializers.SerializerMethodField()

    class Meta:
        model = IngestBatch
        fields = ["id", "project", "source", "status", "created_at", "counts"]

    def get_counts(self, obj: IngestBatch) -> dict[str, int]:
        from annotations.services.ingest import batch_counts

        return batch_counts(obj)


class ReaderSerializer(serializers.ModelSerializer):
    email = serializers.EmailField(source="user.email", read_only=True)

    class Meta:
        model = Reader
        fields = ["code", "email", "active", "created_at"]


class ReaderCreateSerializer(serializers.Serializer):
    email = serializers.EmailField()
    code = serializers.CharField(max_length=32)
    #: Checked by the platform's password policy in ``readers.reader_create``.
    password = serializers.CharField(write_only=True, required=False, trim_whitespace=False,
                                     max_length=128)


class AuthTokenRequestSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(write_only=True, trim_whitespace=False, max_length=128)


class AuthTokenSerializer(serializers.Serializer):
    token = serializers.CharField()
    expires_at = serializers.DateTimeField()


class AssignmentSerializer(serializers.ModelSerializer):
    image = serializers.CharField(source="image.pseudo_id", read_only=True)
    project = serializers.CharField(source="image.project.slug", read_only=True)
    reader = serializers.CharField(source="reader.code", read_only=True)

    class Meta:
        model = Assignment
        fields = ["id", "project", "image", "reader", "status", "created_at", "completed_at"]


class AuditEventSerializer(serializers.ModelSerializer):
    actor = serializers.CharField(source="actor.username", default=None, read_only=True)
    project = serializers.CharField(source="project.slug", default=None, read_only=True)

    class Meta:
        model = AuditEvent
        fields = ["id", "actor", "action", "project", "target_type", "target_id", "detail",
                  "created_at"]
