"""Inference with a published model version.

A model version is a folder written by ``save_model_version`` (see
``training.artifacts``): ``config.yaml``, ``model.pth`` and a manifest whose
SHA-256 is the version's digest.  ``Detector.from_dir`` reads the folder once,
checks every file it will use against the digest the caller expects (the
registry's record) or against the manifest, and refuses
(``DomainError("model_checksum_mismatch")``) before parsing anything, so a
corrupted or swapped file never serves predictions; the config is parsed
with the safe YAML loader only and the weights as tensors only.

Detections come back in ORIGINAL image pixels (``x_min, y_min, x_max, y_max``),
with the full softmax over all classes (background last) per detection; see
``training.modeling`` for how the probabilities are kept.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import training.compat  # noqa: F401  (patches libraries before detectron2 loads)
import training.modeling  # noqa: F401  (registers CXRROIHeads)

# isort: split
from detectron2.config import CfgNode
from detectron2.data import transforms as T
from detectron2.modeling import build_model

from annotations.errors import DomainError
from training.artifacts import (  # noqa: F401  (re-exported: callers import them from here)
    CHECKPOINT_FILE,
    CONFIG_FILE,
    MANIFEST_FILE,
    read_version,
    save_model_version,
)
from training.inputs import to_model_image


@dataclass(frozen=True)
class Detections:
    """One image's detections; rows of every array are the same detections.

    ``boxes``: ``(n, 4)`` float64, original pixels, ``x_min, y_min, x_max, y_max``;
    ``scores``: ``(n,)`` the winning class probability; ``classes``: ``(n,)``
    int64 model class index (= taxonomy ``class_id``); ``probs``:
    ``(n, num_classes + 1)`` the softmax (last column: background) that the
    score was taken from; ``image_size``: ``(height, width)`` of the input.
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    probs: np.ndarray
    image_size: tuple[int, int]

    def __len__(self) -> int:
        return len(self.scores)


class Detector:
    """A loaded model version that turns radiographs into ``Detections``."""

    def __init__(self, cfg: CfgNode, weights: bytes, *, device: str | None = None,
                 batch_size: int = 4, amp: bool = False) -> None:
        """Build from a config and VERIFIED weight bytes; use ``from_dir`` to load a version.

        Bytes rather than a path, so that nothing reaches ``torch.load`` that
        ``training.artifacts.read_version`` did not check.  ``amp``: the forward in
        float16 autocast on a GPU (tensor cores; Detectron2 decodes boxes in
        float32 whatever the input); ignored on the CPU,
        whose path stays float32 and bit-for-bit what it was.
        """
        if not isinstance(weights, bytes):
            raise TypeError("Detector takes verified checkpoint bytes; load a version "
                            "folder with Detector.from_dir")
        self.cfg = cfg.clone()
        self.cfg.defrost()
        if device:
            self.cfg.MODEL.DEVICE = device
        elif self.cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
            self.cfg.MODEL.DEVICE = "cpu"
        self.cfg.MODEL.WEIGHTS = ""
        self.cfg.freeze()
        self.batch_size = max(1, batch_size)
        self.amp = bool(amp) and str(self.cfg.MODEL.DEVICE).startswith("cuda")
        self.model = build_model(self.cfg)
        self._load_state(weights)
        self.model.eval()
        self._resize = T.ResizeShortestEdge(
            [self.cfg.INPUT.MIN_SIZE_TEST] * 2, self.cfg.INPUT.MAX_SIZE_TEST
        )

    @classmethod
    def from_dir(
        cls,
        directory: str | Path,
        *,
        expected_sha256: str | None = None,
        device: str | None = None,
        batch_size: int = 4,
        configure: Callable[[CfgNode], None] | None = None,
        amp: bool = False,
    ) -> Detector:
        """Load the version in ``directory``, verified whole before anything is parsed.

        ``expected_sha256``: the registry's digest (recommended; without it the
        folder's own manifest is the reference).  ``configure`` may change the
        verified config before the model is built (e.g. the score threshold).
        """
        files = read_version(directory, expected_sha256)
        cfg = files.cfg
        if configure is not None:
            configure(cfg)
        return cls(cfg, files.weights, device=device, batch_size=batch_size, amp=amp)

    @property
    def class_names(self) -> list[str]:
        return list(self.cfg.CXR.CLASS_NAMES)

    @property
    def num_classes(self) -> int:
        return int(self.cfg.MODEL.ROI_HEADS.NUM_CLASSES)

    def _load_state(self, data: bytes) -> None:
        try:
            blob = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            state = blob.get("model", blob) if isinstance(blob, dict) else None
            if not isinstance(state, dict):
                raise ValueError("no state dict in checkpoint")
            self.model.load_state_dict(state, strict=True)
        except (RuntimeError, ValueError, KeyError, EOFError) as exc:
            raise DomainError(
                "invalid_model", f"checkpoint does not fit the config: {exc}", status=422
            ) from exc

    def predict(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """Detections per image, in input order; images may differ in size.

        Images are batched (``batch_size``) only with others of the same
        resized shape: GroupNorm statistics span the padded canvas, so
        mixing sizes would make a result depend on its batch neighbours.
        """
        prepared = [self._prepare(im) for im in images]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, item in enumerate(prepared):
            groups.setdefault(tuple(item["image"].shape), []).append(i)
        out: list[Detections | None] = [None] * len(prepared)
        with torch.inference_mode(), self.autocast():
            for indices in groups.values():
                for start in range(0, len(indices), self.batch_size):
                    chunk = indices[start : start + self.batch_size]
                    results = self.model([prepared[i] for i in chunk])
                    for i, res in zip(chunk, results, strict=True):
                        out[i] = self._to_detections(res["instances"], prepared[i])
        return [d for d in out if d is not None]

    def autocast(self) -> contextlib.AbstractContextManager:
        """The forward's precision: float16 autocast when ``amp`` is on (GPU only)."""
        if self.amp:
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def _prepare(self, image: np.ndarray) -> dict:
        pixels = to_model_image(image)
        height, width = pixels.shape[:2]
        resized = self._resize.get_transform(pixels).apply_image(pixels)
        tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)))
        return {"image": tensor, "height": height, "width": width}

    def _to_detections(self, inst, item: dict) -> Detections:
        inst = inst.to("cpu")
        k = self.num_classes + 1
        probs = inst.pred_probs if inst.has("pred_probs") else torch.zeros((len(inst), k))
        probs = probs.float()  # autocast may leave them half precision
        return Detections(
            boxes=inst.pred_boxes.tensor.numpy().astype(np.float64).reshape(-1, 4),
            scores=inst.scores.numpy().astype(np.float64),
            classes=inst.pred_classes.numpy().astype(np.int64),
            probs=probs.numpy().astype(np.float64).reshape(-1, k),
            image_size=(int(item["height"]), int(item["width"])),
        )
