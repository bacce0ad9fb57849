"""The cardiothoracic ratio across a project: measured on every image's final masks,
flagged above the project's threshold, and set against what readers labelled.

Per image: the ratio, the flag, whether the final label says cardiomegaly (a
"Cardiomegaly" box or image-level finding) and which readers drew a cardiomegaly box.
Summary: how often the measurement and the label agree, with Cohen's kappa
(scikit-learn), so a project sees whether its readers call cardiomegaly where the
heart is measurably enlarged.
"""

from __future__ import annotations

from typing import Any

from sklearn.metrics import cohen_kappa_score

from annotations.models import AnnotationBox, Image, Project
from annotations.services.consensus import usable_annotations
from annotations.services.labels import final_results
from annotations.services.mask_layers import CARDIOMEGALY, ctr_of
from annotations.services.segmenter_training import final_masks
from annotations.services.storage import mask_read

#: Images measured per report (a report is a page an admin reads, not an export).
MAX_IMAGES = 5000


def ctr_report(project: Project) -> dict[str, Any]:
    masks = final_masks(project)
    labels = final_results(project)
    names = dict(project.label_classes.values_list("class_id", "name"))
    ids = sorted(masks)[:MAX_IMAGES]
    images = {i.pseudo_id: i for i in Image.objects.filter(project=project, pseudo_id__in=ids)}
    boxed: dict[str, set[str]] = {}
    for pid, code in (AnnotationBox.objects.filter(
            annotation__in=usable_annotations(project, images.values()),
            label_class__name=CARDIOMEGALY)
            .values_list("annotation__image__pseudo_id", "annotation__reader__code")):
        boxed.setdefault(pid, set()).add(code)
    rows = []
    for pid in ids:
        loaded = {name: mask_read(path) for name, path in masks[pid].items()}
        ctr = ctr_of(loaded, project.ctr_threshold)
        if ctr is None:
            continue
        final = labels.get(pid)
        labelled = final is not None and (CARDIOMEGALY in final.image_labels or any(
            names.get(int(c)) == CARDIOMEGALY for c in final.classes))
        rows.append({"image": pid, "ratio": ctr["ratio"], "cardiomegaly": ctr["cardiomegaly"],
                     "labelled": labelled, "readers_boxed": sorted(boxed.get(pid, ()))})
    flags = [r["cardiomegaly"] for r in rows]
    said = [r["labelled"] for r in rows]
    both_kinds = len(set(flags)) > 1 or len(set(said)) > 1
    summary = {
        "images": len(rows), "threshold": project.ctr_threshold,
        "flagged": sum(flags), "labelled": sum(said),
        "both": sum(f and s for f, s in zip(flags, said, strict=True)),
        "flagged_only": sum(f and not s for f, s in zip(flags, said, strict=True)),
        "labelled_only": sum(s and not f for f, s in zip(flags, said, strict=True)),
        "agreement": (sum(f == s for f, s in zip(flags, said, strict=True)) / len(rows))
        if rows else None,
        "kappa": float(cohen_kappa_score(flags, said)) if rows and both_kinds else None,
    }
    return {"summary": summary, "images": rows, "truncated": len(masks) > MAX_IMAGES}
