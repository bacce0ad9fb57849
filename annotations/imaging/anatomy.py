"""Is this a frontal chest radiograph?  Body part and view are known at ingest.

A chest project that silently imports a hand film or a lateral view trains on the wrong
anatomy (lateral views have other projections of every finding, and the detector and the
readers' taxonomy assume frontal films).  The header tells: ``BodyPartExamined`` (DICOM
CID 4031 terms) and ``ViewPosition``.  This module only judges; the project decides what
to do (accept, flag, quarantine: ``Project.anatomy_policy``).  An absent tag is not judged:
many CR exports leave it empty, and quarantining them would stop ordinary chest films.

Pure module: no Django.
"""

from __future__ import annotations

#: CID 4031 body parts (and common vendor spellings) that are a chest film.
CHEST_BODY_PARTS = frozenset({"CHEST", "THORAX", "LUNG", "HEART", "CHEST_LAT", "CHESTLAT",
                              "CHEST_PA", "CHEST_AP"})
#: Lateral and decubitus-lateral views (DICOM ViewPosition terms).
LATERAL_VIEWS = frozenset({"LL", "RL", "LLD", "RLD", "LAT", "LATERAL"})


def anatomy_finding(body_part: str, view_position: str) -> tuple[str, str] | None:
    """``(reason, message)`` when the film is not a frontal chest radiograph, else None."""
    part = (body_part or "").strip().upper()
    if part and part not in CHEST_BODY_PARTS:
        return "not_chest", "body part examined is not the chest"
    view = (view_position or "").strip().upper()
    if view in LATERAL_VIEWS:
        return "lateral_view", f"lateral view ({view}), not a frontal film"
    return None
