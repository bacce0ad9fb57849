"""Gold-set metrics of a mask model, computed by MONAI.

Per mask class: mean Dice (``monai.metrics.DiceMetric``) and mean 95th-percentile
Hausdorff distance in pixels (``monai.metrics.HausdorffDistanceMetric``), over the gold
films where the class is in the truth; ``mean_dice`` (over classes) is the figure the
registry promotes on.  A predicted structure where the truth has none counts as a Dice
of 0 for that film; a film with neither is skipped for that class (nothing to measure).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.metrics import DiceMetric, HausdorffDistanceMetric


def segmenter_metrics(truth: Sequence[np.ndarray], probs: Sequence[np.ndarray],
                      class_names: Sequence[str], threshold: float = 0.5) -> dict[str, Any]:
    """``truth``: per film ``(C, H, W)`` bool; ``probs``: per film ``(C, H, W)`` floats."""
    per_class: dict[str, dict[str, Any]] = {}
    for c, name in enumerate(class_names):
        dice = DiceMetric(include_background=True, reduction="none", ignore_empty=False)
        hd95 = HausdorffDistanceMetric(include_background=True, percentile=95,
                                       reduction="none")
        dices, hds = [], []
        for t, p in zip(truth, probs, strict=True):
            gt, pred = np.asarray(t[c], bool), np.asarray(p[c]) >= threshold
            if not gt.any() and not pred.any():
                continue
            y = torch.from_numpy(gt[None, None].astype(np.float32))
            yp = torch.from_numpy(pred[None, None].astype(np.float32))
            dices.append(float(dice(yp, y).item()))
            if gt.any() and pred.any():
                hds.append(float(hd95(yp, y).item()))
        per_class[name] = {
            "dice": float(np.mean(dices)) if dices else None,
            "hd95_px": float(np.mean(hds)) if hds else None,
            "films": len(dices),
        }
    defined = [v["dice"] for v in per_class.values() if v["dice"] is not None]
    return {"task": "segmenter", "per_class": per_class,
            "mean_dice": float(np.mean(defined)) if defined else None,
            "threshold": threshold}
