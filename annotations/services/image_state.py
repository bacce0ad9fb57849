"""The image state machine: where every image of a project stands on its way from
import to final label, named the same way on every page and in every decision.

An image moves through states that every page names the same way:

* ``unassigned``: imported, no reader yet;
* ``reading``: some of its assigned readers have not finished;
* ``read``: every assigned reader finished, no consensus covers all of them yet;
* ``adjudication``: consensus found readers too far apart, an adjudicator decides;
* ``final``: every read is in, and a consensus (or an adjudicator's decision) made after
  the last of them stands.  Only then may a radiologist see other readers' boxes or
  the consensus of that image (blinding).

Transitions follow from the stored facts, never from a stored state (there is none
to drift): assignments move an image from unassigned to reading, the last finished
read to read, a consensus run that merged every current read to final (or, when
readers disagree past the project's threshold, to adjudication until decided).
Blinding, retraining and the reader's own progress all ask this module.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import contextmanager
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.db import connection, transaction
from django.db.models import QuerySet

from annotations.models import (
    Adjudication,
    Assignment,
    ConsensusImage,
    ConsensusRun,
    Image,
    Project,
)
from annotations.selectors import is_admin
from annotations.services.consensus import usable_annotations

STATES = ("unassigned", "reading", "read", "adjudication", "final")
DONE = (Assignment.Status.COMPLETED, Assignment.Status.SKIPPED)


#: State codes of the query below, in ``STATES`` order.
_CODE = {i: name for i, name in enumerate(STATES)}


def _state_sql(project: Project, image_ids: list[int] | QuerySet | None
               ) -> tuple[str, list[Any]]:
    """One query: every image of the project (of ``image_ids``) with its state code.

    Why SQL and not rows in Python: at 100,000 images the facts behind a state are
    about 300,000 reads and as many recorded (run, read) pairs; the database joins and
    counts them in a fraction of the time it takes to send them (measured in
    ``bench/scale``).  The rules are the module docstring's, one CASE arm each, in order:
    no assignment, an unfinished one, a pending / decided adjudication (the latest one
    not cancelled), then final when the latest finished run that covered the image
    recorded every current usable read of it.
    """
    images = Image.objects.filter(project=project)
    if image_ids is not None:  # a queryset stays a subquery (no 18,000-item IN list)
        images = images.filter(pk__in=image_ids)
    img_sql, img_params = images.order_by().values("id").query.sql_with_params()
    # project-wide: used once below, so PostgreSQL inlines it and joins it to ``latest``
    # (already cut down to the images asked for) instead of filtering it a second time
    usable = usable_annotations(project)
    # "usable" has one definition (consensus.usable_annotations); its SQL is reused here
    use_sql, use_params = usable.order_by().values("id", "image_id").query.sql_with_params()
    t = {m: m._meta.db_table for m in (Assignment, ConsensusImage, ConsensusRun,
                                       Adjudication)}
    through = ConsensusRun.annotations.through
    run_col = through._meta.get_field("consensusrun").column
    read_col = through._meta.get_field("readerannotation").column
    done = tuple(str(s) for s in DONE)
    sql = f"""
    WITH img AS ({img_sql}),
    asg AS (SELECT a.image_id, COUNT(*) AS n,
                   SUM(CASE WHEN a.status IN ({", ".join(["%s"] * len(done))})
                       THEN 1 ELSE 0 END) AS done
            FROM {t[Assignment]} a JOIN img ON img.id = a.image_id GROUP BY a.image_id),
    latest AS (SELECT ci.image_id, MAX(ci.run_id) AS run_id
               FROM {t[ConsensusImage]} ci JOIN img ON img.id = ci.image_id
               JOIN {t[ConsensusRun]} r ON r.id = ci.run_id AND r.status = %s
               GROUP BY ci.image_id),
    usable AS ({use_sql}),
    uncovered AS (SELECT DISTINCT u.image_id
                  FROM usable u JOIN latest l ON l.image_id = u.image_id
                  WHERE NOT EXISTS (SELECT 1 FROM {through._meta.db_table} c
                                    WHERE c.{run_col} = l.run_id AND c.{read_col} = u.id)),
    adj AS (SELECT ad.image_id, ad.status FROM {t[Adjudication]} ad
            JOIN (SELECT a2.image_id, MAX(a2.id) AS id FROM {t[Adjudication]} a2
                  JOIN img ON img.id = a2.image_id WHERE a2.status <> %s
                  GROUP BY a2.image_id) last ON last.id = ad.id)
    SELECT img.id, CASE
        WHEN asg.n IS NULL THEN 0
        WHEN asg.done < asg.n THEN 1
        WHEN adj.status = %s THEN 3
        WHEN adj.status = %s THEN 4
        WHEN latest.run_id IS NOT NULL AND uncovered.image_id IS NULL THEN 4
        ELSE 2 END AS state
    FROM img LEFT JOIN asg ON asg.image_id = img.id
    LEFT JOIN adj ON adj.image_id = img.id
    LEFT JOIN latest ON latest.image_id = img.id
    LEFT JOIN uncovered ON uncovered.image_id = img.id"""
    params = [*img_params, *done, str(ConsensusRun.Status.DONE), *use_params,
              str(Adjudication.Status.CANCELLED), str(Adjudication.Status.PENDING),
              str(Adjudication.Status.DONE)]
    return sql, params


#: Up to this many ids, the state query's nested loops over indexes are the right plan.
_FEW = 1000


@contextmanager
def _hash_joins(on: bool):
    """Nested loops off (PostgreSQL) for the state query over many images, and only
    for it (restored after it, reverted with its savepoint if it fails).

    Why: on tables that grew since the last ANALYZE (a project filling up between
    autovacuum passes) the planner guesses one row per CTE and nests loops over them:
    3.5 s for 900 images in bench/scale, where hash joins take 10 ms.  Hash joins are
    linear whatever the estimates; for a handful of ids the nested loops are right.
    """
    if not on or connection.vendor != "postgresql":
        yield
        return
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('enable_nestloop')")
        before = cursor.fetchone()[0]
        cursor.execute("SELECT set_config('enable_nestloop', 'off', true)")
        yield
        cursor.execute("SELECT set_config('enable_nestloop', %s, true)", [before])


def image_states(project: Project, image_ids: Iterable[int] | QuerySet | None = None
                 ) -> dict[int, str]:
    """Image pk -> state (see the module docstring), in one query.

    "Consensus after the last read" is decided exactly, not by clock: the latest
    finished run that covered the image must have recorded every current usable
    read of it (a run records the annotation versions it merged).
    """
    if image_ids is not None and not isinstance(image_ids, QuerySet):
        image_ids = list(image_ids)
    try:
        sql, params = _state_sql(project, image_ids)
    except EmptyResultSet:  # no ids (an empty page): Django will not write "IN ()"
        return {}
    many = not isinstance(image_ids, list) or len(image_ids) > _FEW
    with _hash_joins(many), connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {pk: _CODE[code] for pk, code in cursor.fetchall()}


def state_counts(project: Project) -> dict[str, int]:
    """State -> number of images of the project (the dashboard's counts), counted in
    the database: no per-image row leaves it."""
    sql, params = _state_sql(project, None)
    with _hash_joins(True), connection.cursor() as cursor:
        cursor.execute(f"SELECT state, COUNT(*) FROM ({sql}) s GROUP BY state", params)
        counts = dict(cursor.fetchall())
    return {name: int(counts.get(code, 0)) for code, name in _CODE.items()}


def consensus_is_final(image: Image) -> bool:
    """Whether ``image`` is final (blinding has ended for its readers).

    An image with no finished run over it and no decided adjudication cannot be final:
    that one indexed lookup answers for most images asked about (every read a
    reconcile pass stores asks), and the state query answers for the rest.
    """
    merged = ConsensusImage.objects.filter(image_id=image.pk,
                                           run__status=ConsensusRun.Status.DONE).exists()
    if not merged and not Adjudication.objects.filter(
            image_id=image.pk, status=Adjudication.Status.DONE).exists():
        return False
    return image_states(image.project, [image.pk]).get(image.pk) == "final"


def model_output_visible(user: Any, image: Image) -> bool:
    """Whether ``user`` may see what a model says about ``image`` (its boxes, its
    findings, where it looked): admins always; readers once the image is final, or
    where the project shows pre-labels to its readers (blinding)."""
    return is_admin(user) or image.project.show_prelabels or consensus_is_final(image)
