"""Where the classifier looked: Grad-CAM heatmaps, and the pointing game that checks them.

Grad-CAM (Selvaraju et al. 2017) comes from the ``grad-cam`` package: the class
logit's gradients on the last dense block's normalised features weight those features
into one coarse map, upsampled here to the film's pixels and scaled to 0..1 per film.

The pointing game (Zhang et al. 2016) asks whether a map's peak falls inside the true
box of the finding; its random baseline is the box's share of the film, which is what
a map pointing anywhere would score.  ``cam_box`` thresholds a map into a box (the
bounding box of the largest connected region above a fraction of its peak), which is
how a saliency map is turned into a localisation to compare with a detector's box.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch

from training.classifier import Classifier, prepare


def classifier_cams(classifier: Classifier, images: Sequence[np.ndarray],
                    class_name: str) -> list[np.ndarray]:
    """One Grad-CAM map per film for ``class_name``: float32 ``(H, W)`` in 0..1."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    column = classifier.class_names.index(class_name)
    model = classifier.model
    layer = model.features[-1]  # the last BatchNorm of the dense blocks (norm5)
    out = []
    with torch.enable_grad(), GradCAM(model=model, target_layers=[layer]) as cam:
        for image in images:
            x = prepare(image, classifier.input_size)[None]
            heat = cam(input_tensor=x, targets=[ClassifierOutputTarget(column)])[0]
            h, w = image.shape[:2]
            heat = cv2.resize(heat.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
            peak = float(heat.max())
            out.append(heat / peak if peak > 0 else heat)
    return out


def pointing_hit(heat: np.ndarray, box: Sequence[float]) -> bool:
    """Whether the map's peak lies inside ``box`` (x_min, y_min, x_max, y_max, pixels)."""
    y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
    return bool(box[0] <= x + 0.5 <= box[2] and box[1] <= y + 0.5 <= box[3])


def pointing_baseline(box: Sequence[float], shape: tuple[int, int]) -> float:
    """The pointing game's chance rate for ``box``: its share of the film's area."""
    h, w = shape
    return float(max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1]) / (w * h))


def cam_region(heat: np.ndarray, fraction: float = 0.5) -> np.ndarray:
    """The largest connected region where the map is at least ``fraction`` of its peak
    (a boolean mask; empty for a map with no peak)."""
    if not float(heat.max()) > 0:
        return np.zeros(heat.shape, bool)
    mask = (heat >= fraction * float(heat.max())).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return np.zeros(heat.shape, bool)
    return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def cam_box(heat: np.ndarray, fraction: float = 0.5) -> np.ndarray | None:
    """The box of the largest region where the map is at least ``fraction`` of its peak."""
    region = cam_region(heat, fraction)
    if not region.any():
        return None
    ys, xs = np.nonzero(region)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)


def heatmap_rgba(heat: np.ndarray, floor: float = 0.2) -> np.ndarray:
    """A map as an overlay: ``(H, W, 4)`` uint8 in OpenCV's BGRA order, coloured by the
    jet colour map and transparent where the map is below ``floor`` of its peak (the
    film stays readable around what the classifier looked at)."""
    heat = np.clip(np.asarray(heat, dtype=np.float32), 0.0, 1.0)
    colour = cv2.applyColorMap(np.rint(heat * 255).astype(np.uint8), cv2.COLORMAP_JET)
    alpha = np.where(heat >= floor, np.rint(128 + 127 * heat), 0).astype(np.uint8)
    return np.dstack([colour, alpha])


def detector_box_cam(detector: Any, image: np.ndarray, box: Sequence[float],
                     class_id: int) -> np.ndarray:
    """Where the detector looked when it scored ``box`` (the film's pixels) as
    ``class_id``: gradient x activation of that box's class logit on the FPN features.

    The box is pooled from the backbone features exactly as a proposal is, through the
    box head and predictor; per FPN level, the logit's gradient times the features,
    summed over channels (positive part), upsampled to the film and summed over levels.
    Written here rather than taken from ``grad-cam``: that package targets
    classification outputs, and a detector's score for one fixed box is not an output
    of Detectron2's forward pass.
    """
    from detectron2.structures import Boxes

    model = detector.model
    item = detector._prepare(image)
    h, w = image.shape[:2]
    rh, rw = item["image"].shape[1:]
    with torch.enable_grad():
        images = model.preprocess_image([item])
        features = model.backbone(images.tensor)
        names = model.roi_heads.box_in_features
        maps = [features[n] for n in names]
        for f in maps:
            f.retain_grad()
        scale = np.array([rw / w, rh / h, rw / w, rh / h])
        b = torch.as_tensor(np.asarray(box, dtype=np.float64) * scale,
                            dtype=torch.float32)[None].to(images.tensor.device)
        pooled = model.roi_heads.box_pooler(maps, [Boxes(b)])
        logits, _ = model.roi_heads.box_predictor(model.roi_heads.box_head(pooled))
        model.zero_grad()
        logits[0, int(class_id)].backward()
    heat = np.zeros((h, w), dtype=np.float32)
    for f in maps:
        if f.grad is None:
            continue
        # gradient x activation per position (not Grad-CAM's per-channel average: the
        # pooled box only reaches the features under it, which is what is explained)
        cam = torch.relu((f.grad[0] * f[0]).sum(0)).detach().cpu().numpy()
        # the feature map covers the padded canvas: crop to the resized film first
        fh, fw = cam.shape
        stride = images.tensor.shape[-1] / fw
        cam = cam[: max(1, int(round(rh / stride))), : max(1, int(round(rw / stride)))]
        heat += cv2.resize(cam.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    peak = float(heat.max())
    return heat / peak if peak > 0 else heat
