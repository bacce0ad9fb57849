"""Projects and their taxonomies."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils.text import slugify

from annotations import events, taxonomy
from annotations.errors import DomainError
from annotations.models import LabelClass, MaskClass, Project
from annotations.services.audit import audit_record


@transaction.atomic
def project_create(
    *,
    name: str,
    slug: str | None = None,
    taxonomy_preset: str | None = "vindr_cxr",
    class_names: list[str] | None = None,
    image_classes: list[str] | None = None,
    mask_preset: str | None = None,
    mask_classes: list[str] | None = None,
    readers_per_image: int = 3,
    actor: Any = None,
    **options: Any,
) -> Project:
    """Create a project with its taxonomy: a preset, or custom box class names and/or
    image-level class names (read as a multi-select per image); and the structures
    readers paint as masks: the ``anatomy`` preset (both lung fields and the heart), and/or
    ``mask_classes`` by name (a taxonomy box class's name paints that finding's extent)."""
    slug = slug or slugify(name)
    if not slug:
        raise DomainError("invalid_project", "a project needs a name")
    if Project.objects.filter(slug=slug).exists():
        raise DomainError("conflict", f"project {slug!r} already exists")
    if readers_per_image < 1:
        raise DomainError("invalid_project", "readers_per_image must be at least 1")
    if class_names or image_classes:
        specs = taxonomy.build_taxonomy(class_names or [], image_classes=image_classes or ())
        preset_name = ""
    else:
        specs = taxonomy.preset(taxonomy_preset or "vindr_cxr")
        preset_name = taxonomy_preset or "vindr_cxr"
    mask_specs = _mask_specs(mask_preset, mask_classes)
    allowed = {"description", "consensus_strategy", "consensus_params", "show_prelabels",
               "clahe", "allow_burned_in_annotation", "deid_retain_patient_characteristics",
               "anatomy_policy", "display_long_side"}
    unknown = set(options) - allowed
    if unknown:
        raise DomainError("invalid_project", f"unknown options: {sorted(unknown)}")
    project = Project.objects.create(
        name=name, slug=slug, taxonomy_preset=preset_name,
        readers_per_image=readers_per_image,
        created_by=actor if getattr(actor, "is_authenticated", False) else None,
        **options,
    )
    LabelClass.objects.bulk_create(
        LabelClass(
            project=project, class_id=s.class_id, name=s.name, code=s.code, color=s.color,
            image_level=s.image_level,
        )
        for s in specs
    )
    MaskClass.objects.bulk_create(
        MaskClass(project=project, index=s.index, name=s.name, code=s.code, color=s.color,
                  anatomy=s.anatomy)
        for s in mask_specs
    )
    audit_record(action="project.create", actor=actor, project=project, target=project)
    return project


def _mask_specs(preset: str | None, names: list[str] | None) -> list[taxonomy.MaskClassSpec]:
    """The project's mask classes: the preset's structures first, then the named ones."""
    anatomy = [s.name for s in taxonomy.mask_preset(preset)] if preset else []
    extra = [n for n in (names or []) if n not in anatomy]
    if not anatomy and not extra:
        return []
    return taxonomy.build_mask_classes([*anatomy, *extra], anatomy=anatomy)


def project_get(slug: str) -> Project:
    try:
        return Project.objects.get(slug=slug)
    except Project.DoesNotExist as exc:
        raise DomainError("not_found", f"no project {slug!r}") from exc


#: Settings an admin may change after creation (the taxonomy and k are fixed once
#: reading starts: changing them would orphan stored reads).
UPDATABLE = frozenset({"name", "description", "consensus_strategy", "consensus_params",
                       "show_prelabels", "clahe", "adjudication_threshold",
                       "adjudication_budget_per_week",
                       "promotion_threshold", "auto_retrain_after", "anatomy_policy",
                       "two_stage", "two_stage_threshold", "two_stage_rescale",
                       "ctr_threshold", "explanation_prelabels"})


@transaction.atomic
def project_update(*, project: Project, actor: Any = None, **fields: Any) -> Project:
    unknown = set(fields) - UPDATABLE
    if fields.get("anatomy_policy", Project.AnatomyPolicy.ACCEPT) not in \
            Project.AnatomyPolicy.values:
        raise DomainError("invalid_project",
                          f"anatomy_policy must be one of {Project.AnatomyPolicy.values}")
    if unknown:
        raise DomainError("invalid_project", f"cannot change {sorted(unknown)}")
    if "consensus_strategy" in fields or "consensus_params" in fields:
        from annotations.consensus import build

        try:  # the strategy validates its own parameters (automatic runs need them valid)
            build(fields.get("consensus_strategy", project.consensus_strategy),
                  fields.get("consensus_params", project.consensus_params))
        except DomainError as exc:
            raise DomainError("invalid_project", exc.message) from exc
        except (TypeError, ValueError) as exc:
            raise DomainError("invalid_project", f"invalid strategy parameters: {exc}") from exc
    enabling = bool(fields.get("explanation_prelabels")) and not project.explanation_prelabels
    for name, value in fields.items():
        setattr(project, name, value)
    project.save(update_fields=sorted(fields))
    if enabling:  # its Label Studio workspaces get the overlay's control
        events.emit(events.ExplanationsEnabled(project_id=project.pk))
    audit_record(action="project.update", actor=actor, project=project, target=project,
                 detail={"fields": sorted(fields)})
    return project
