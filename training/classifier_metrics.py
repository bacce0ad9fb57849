"""Gold-set metrics of an image-level classifier, computed by scikit-learn.

Per class: AUROC (undefined, None, when the gold set has only positives or only
negatives of the class), and at the operating point (a probability threshold, 0.5
unless the project chooses another) sensitivity, specificity, precision, recall and
F1.  Macro AUROC averages the classes where it is defined; ``macro_auroc`` is the
figure the registry compares when it decides a promotion.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score


def classifier_metrics(y_true: np.ndarray, y_score: np.ndarray, class_names: Sequence[str],
                       threshold: float = 0.5) -> dict[str, Any]:
    """Metrics of ``(N, C)`` scores against ``(N, C)`` 0/1 truth."""
    y_true = np.asarray(y_true, dtype=np.int64).reshape(-1, len(class_names))
    y_score = np.asarray(y_score, dtype=np.float64).reshape(y_true.shape)
    per_class: dict[str, dict[str, Any]] = {}
    aurocs = []
    for j, name in enumerate(class_names):
        t, s = y_true[:, j], y_score[:, j]
        auroc = float(roc_auc_score(t, s)) if 0 < t.sum() < len(t) else None
        if auroc is not None:
            aurocs.append(auroc)
        pred = (s >= threshold).astype(np.int64)
        tn, fp, fn, tp = confusion_matrix(t, pred, labels=[0, 1]).ravel().tolist()
        precision, recall, f1, _ = precision_recall_fscore_support(
            t, pred, average="binary", zero_division=0)
        per_class[name] = {
            "auroc": auroc, "positives": int(t.sum()),
            "sensitivity": tp / (tp + fn) if tp + fn else None,
            "specificity": tn / (tn + fp) if tn + fp else None,
            "precision": float(precision), "recall": float(recall), "f1": float(f1),
        }
    return {
        "macro_auroc": float(np.mean(aurocs)) if aurocs else None,
        "threshold": float(threshold), "n_images": int(len(y_true)),
        "per_class": per_class,
    }
