"""Active-learning rounds: which unlabeled images readers see next.

A round is a run (``services.runs``; a gpu worker executes it).  It scores the pool
(project images with no reader assigned, gold excluded) with the promoted model
version through the pre-labelling pass (uncertainty,
and TTA disagreement plus pooled features when the strategy needs them), selects
``budget`` images with a registered strategy over the stored scores, and assigns
them to k readers each (the handlers push them into the readers' Label Studio
workspaces).  Reads, consensus and retraining follow through the handlers;
``retrain_if_due`` starts a training run once enough new final labels exist.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from django.db import transaction
from django.db.models import Max

from annotations.errors import DomainError
from annotations.models import (
    ActiveLearningRound,
    Image,
    ModelVersion,
    Prediction,
    PrelabelRun,
    Project,
    TrainingRun,
)
from annotations.services import runs
from annotations.services.audit import audit_record
from annotations.services.labels import final_results
from annotations.services.prelabeling import (
    MODEL_SCORE_KINDS,
    prelabel_run_create,
    prelabel_run_execute,
    version_files,
)
from annotations.services.readers import assignments_create, readers_enough
from annotations.services.signing import signed_image_path
from annotations.services.training import training_run_create

logger = logging.getLogger(__name__)


def pool_images(project: Project) -> list[Image]:
    return list(Image.objects.filter(project=project, is_gold=False, assignments__isnull=True)
                .order_by("pseudo_id"))


def _pool_scores(version: ModelVersion, pool: list[Image], labeled: list[Image],
                 with_features: bool = True):
    """Stored scores of the pool (and labeled images' features for diversity); the
    predictions' boxes are never read, features only when a strategy needs them."""
    from training.active_learning import PoolScores

    rows = Prediction.objects.filter(image__in=pool + (labeled if with_features else []),
                                     model_version=version.name).defer("boxes")
    if not with_features:
        rows = rows.defer("features")
    preds = {p.image_id: p for p in rows}
    ids = {i.pk: i.pseudo_id for i in pool + labeled}
    in_pool = [preds[i.pk] for i in pool if i.pk in preds]
    feats_labeled = [preds[i.pk].features for i in labeled
                     if i.pk in preds and preds[i.pk].features]
    return PoolScores(
        image_ids=[ids[p.image_id] for p in in_pool],
        uncertainty={ids[p.image_id]: p.uncertainty for p in in_pool},
        tta={ids[p.image_id]: p.tta for p in in_pool if p.tta is not None},
        features={ids[p.image_id]: np.asarray(p.features) for p in in_pool
                  if with_features and p.features},
        labeled_features=np.asarray(feats_labeled) if feats_labeled else None,
    )


def al_round_create(*, project: Project, strategy: str, budget: int,
                    params: dict | None = None, seed: int = 0, actor: Any = None,
                    enqueue: bool = True) -> ActiveLearningRound:
    """Validate now (a clear 4xx for everything knowable before scoring), score and
    select in a gpu worker.  One round per project at a time: a second one would select
    from the same pool."""
    from training.active_learning import build

    chooser = build(strategy, params or {})
    version = ModelVersion.objects.filter(project=project, promoted=True, kind="detector").first()
    if version is None:
        raise DomainError("not_found", "active learning needs a promoted model version")
    version_files(version.name)
    if "committee" in chooser.requires and not ModelVersion.objects.filter(
            project=project, created_at__lt=version.created_at).exists():
        raise DomainError("conflict", "a committee needs an earlier model version of the "
                          "project beside the promoted one")
    readers_enough(project)
    if not pool_images(project):
        raise DomainError("conflict", "no unlabeled images left in the pool")
    with transaction.atomic():
        list(Project.objects.select_for_update().filter(pk=project.pk).values_list("pk"))
        if project.al_rounds.filter(status__in=runs.ACTIVE).exists():
            raise DomainError("conflict", "an active-learning round is already on its way")
        rnd = ActiveLearningRound.objects.create(
            project=project, strategy=strategy, params=params or {}, budget=budget, seed=seed,
            model_version=version,
            created_by=actor if getattr(actor, "is_authenticated", False) else None)
        audit_record(action="al.round_create", actor=actor, project=project, target=rnd,
                     detail={"strategy": strategy, "budget": budget})
        runs.run_created(rnd, dispatch=enqueue)
    return rnd


def al_round_execute(*, run_id: int) -> ActiveLearningRound:
    """Claim the round, score the pool (an in-process pre-labelling run, heartbeating
    the round after every batch), select and assign in one transaction with the round's
    number.  Idempotent up to that transaction (predictions are upserted), so a round
    whose worker was lost is queued again."""
    return runs.run_execute(ActiveLearningRound, run_id, _round)


def al_round_run(**kwargs: Any) -> ActiveLearningRound:
    """Create and execute a round in this process (commands, benchmarks, tests); a
    round that did not finish is an error here, as it was when rounds were synchronous."""
    rnd = al_round_execute(run_id=al_round_create(**kwargs, enqueue=False).pk)
    if rnd.status != "done":
        raise DomainError("round_failed", f"the round ended {rnd.status}: {rnd.reason}")
    return rnd


class _RoundStopped(Exception):
    """The round (not its scoring run) was cancelled or overtaken: the scoring run ends
    failed, and the round's own heartbeat then says which."""


def _score(rnd: ActiveLearningRound, images: list[Image], al_scores: frozenset[str]):
    """The pool's scores through a pre-labelling run executed here, never left behind:
    whatever stops the round ends its scoring run too (else the sweep would re-queue it
    on its own)."""
    def beat(done: int, total: int) -> None:
        try:
            runs.run_heartbeat(rnd)
        except (runs.RunLost, runs.RunCancelled) as exc:
            raise _RoundStopped(type(exc).__name__) from exc

    scoring = prelabel_run_create(project=rnd.project, model_version=rnd.model_version.name,
                                  images=images, actor=rnd.created_by, enqueue=False)
    try:
        return prelabel_run_execute(run_id=scoring.pk, al_scores=al_scores, progress=beat)
    finally:
        runs.run_fail(PrelabelRun, scoring.pk, reason="its active-learning round stopped")


def _round(rnd: ActiveLearningRound) -> None:
    from training.active_learning import build

    project, version = rnd.project, rnd.model_version
    if version is None:
        raise DomainError("not_found", "the round's model version was deleted")
    chooser = build(rnd.strategy, rnd.params)
    pool = pool_images(project)
    if not pool:
        raise DomainError("conflict", "no unlabeled images left in the pool")
    labeled = list(Image.objects.filter(project=project, assignments__isnull=False).distinct())
    kinds = frozenset(chooser.requires & MODEL_SCORE_KINDS)
    scoring = _score(rnd, pool + (labeled if kinds else []), kinds)
    runs.run_heartbeat(rnd)  # still this attempt's, not cancelled: now select and assign
    if scoring.status != "done":
        raise DomainError("scoring_failed", f"scoring the pool failed: {scoring.reason}")
    scores = _pool_scores(version, pool, labeled)
    selected = chooser.select(scores, rnd.budget, seed=rnd.seed)
    labeled_before = len(final_results(project))
    runs.run_heartbeat(rnd)
    by_id = {i.pseudo_id: i for i in pool}
    with transaction.atomic():
        list(Project.objects.select_for_update().filter(pk=project.pk).values_list("pk"))
        taken = set(Image.objects.filter(pseudo_id__in=selected, assignments__isnull=False)
                    .values_list("pseudo_id", flat=True))  # assigned meanwhile by an admin
        selected = [i for i in selected if i not in taken]
        number = (project.al_rounds.aggregate(n=Max("number"))["n"] or 0) + 1
        assignments_create(project=project, images=[by_id[i] for i in selected],
                           actor=rnd.created_by)
        audit_record(action="al.round", actor=rnd.created_by, project=project, target=rnd,
                     detail={"strategy": rnd.strategy, "budget": rnd.budget,
                             "selected": len(selected)})
        runs.run_finish(rnd, number=number, selected=selected,
                        scores={i: scores.uncertainty.get(i, {}) for i in selected},
                        labeled_before=labeled_before)


def retrain_if_due(project: Project) -> TrainingRun | None:
    """Start training once ``auto_retrain_after`` new final labels exist (the handlers
    ask after every consensus run)."""
    n = project.auto_retrain_after
    if not n or not project.label_classes.filter(image_level=False).exists():
        return None  # off, or nothing for the detector to learn (image-level taxonomy)
    current = ModelVersion.objects.filter(project=project, promoted=True, kind="detector").first()
    trained = set(current.train_images) if current else set()
    gold = set(Image.objects.filter(project=project, is_gold=True)
               .values_list("pseudo_id", flat=True))
    new = [i for i in final_results(project) if i not in trained and i not in gold]
    if len(new) < n or TrainingRun.objects.filter(
            project=project, status__in=["pending", "running"]).exists():
        return None
    return training_run_create(project=project)


def al_round_preview(*, project: Project, strategy: str, budget: int,
                     params: dict | None = None, seed: int = 0) -> dict[str, Any]:
    """What Start round would pick now, from the scores already stored for the
    promoted model (nothing is assigned or re-scored); pool images without a
    stored score are counted, since a round scores them first."""
    from training.active_learning import COMMITTEE_KEY, STABILITY_KEY, build

    chooser = build(strategy, params or {})
    version = ModelVersion.objects.filter(project=project, promoted=True, kind="detector").first()
    if version is None:
        raise DomainError("not_found", "active learning needs a promoted model version")
    pool = pool_images(project)
    needs_features = "features" in chooser.requires
    labeled = list(Image.objects.filter(project=project, assignments__isnull=False)
                   .distinct()) if needs_features else []
    scores = _pool_scores(version, pool, labeled, with_features=needs_features)
    missing = sorted(set(chooser.requires) - {"uncertainty"}
                     - {k for k in ("tta", "features") if getattr(scores, k)}
                     - {k for k, key in (("stability", STABILITY_KEY),
                                         ("committee", COMMITTEE_KEY))
                        if scores.image_ids and all(key in (scores.uncertainty.get(i) or {})
                                                    for i in scores.image_ids)})
    selected = chooser.select(scores, budget, seed=seed) if scores.image_ids and not missing \
        else []
    return {
        "strategy": strategy, "budget": budget, "model_version": version.name,
        "pool": len(pool), "scored": len(scores.image_ids),
        "unscored": len(pool) - len(scores.image_ids), "missing_scores": missing,
        "selected": [{"id": i, "thumbnail": signed_image_path(i, "thumbnail"),
                      "scores": scores.uncertainty.get(i, {}), "tta": scores.tta.get(i)}
                     for i in selected],
    }
