"""Inference with a published model version, and publishing one.

A model version is a directory of three files written by
``save_model_version``:

* ``config.yaml``: the full Detectron2 config (``training.config`` keys
  included), so inference rebuilds exactly the trained architecture, input
  size and pixel normalisation;
* ``model.pth``: ``{"model": state_dict}`` only (tensors), loadable with
  ``torch.load(weights_only=True)``, i.e. without unpickling arbitrary code;
* ``model.pth.sha256``: ``sha256sum`` format.  ``Detector`` hashes the bytes
  it is about to load and refuses (``DomainError("model_checksum_mismatch")``)
  when they differ from the file or from the checksum the caller expects
  (the registry's record), so a corrupted or swapped checkpoint never serves
  predictions.

Detections come back in ORIGINAL image pixels (``x_min, y_min, x_max, y_max``),
with the full softmax over all classes (background last) per detection; see
``training.modeling`` for how the probabilities are kept.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
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
from training.config import empty_config
from training.inputs import to_model_image

CONFIG_FILE = "config.yaml"
CHECKPOINT_FILE = "model.pth"
CHECKSUM_SUFFIX = ".sha256"


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


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_model_version(
    model: torch.nn.Module, cfg: CfgNode, out_dir: str | Path
) -> tuple[Path, str]:
    """Write ``config.yaml``, ``model.pth`` and its checksum; return (checkpoint, sha256).

    Only the weights are saved (no optimizer or scheduler state): a version
    is for inference and for initialising the next training run.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_FILE).write_text(cfg.dump())
    buffer = io.BytesIO()
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"model": state}, buffer)
    data = buffer.getvalue()
    checkpoint = out / CHECKPOINT_FILE
    checkpoint.write_bytes(data)
    digest = sha256_bytes(data)
    checkpoint.with_name(checkpoint.name + CHECKSUM_SUFFIX).write_text(
        f"{digest}  {checkpoint.name}\n"
    )
    return checkpoint, digest


def load_config(path: str | Path) -> CfgNode:
    """A saved config merged over Detectron2 defaults plus our keys."""
    cfg = empty_config()
    cfg.merge_from_file(str(path))
    return cfg


def _expected_checksum(checkpoint: Path, expected: str | None) -> str:
    if expected:
        return expected.strip().lower()
    sidecar = checkpoint.with_name(checkpoint.name + CHECKSUM_SUFFIX)
    if not sidecar.is_file():
        raise DomainError(
            "model_checksum_missing",
            f"no checksum for {checkpoint.name}: pass expected_sha256 or ship {sidecar.name}",
            status=422,
        )
    return sidecar.read_text().split()[0].strip().lower()


def read_verified(checkpoint: str | Path, expected_sha256: str | None = None) -> bytes:
    """The checkpoint's bytes, after checking them against the expected sha256.

    The hash is taken over exactly the bytes that will be deserialised, so
    the file cannot change between the check and the load.
    """
    path = Path(checkpoint)
    expected = _expected_checksum(path, expected_sha256)
    data = path.read_bytes()
    actual = sha256_bytes(data)
    if actual != expected:
        raise DomainError(
            "model_checksum_mismatch",
            f"checkpoint {path.name} does not match its checksum; refusing to load it",
            status=422,
            detail={"expected": expected, "actual": actual},
        )
    return data


class Detector:
    """A loaded model version that turns radiographs into ``Detections``."""

    def __init__(
        self,
        cfg: CfgNode,
        checkpoint: str | Path,
        *,
        expected_sha256: str | None = None,
        device: str | None = None,
        batch_size: int = 4,
    ) -> None:
        data = read_verified(checkpoint, expected_sha256)
        self.cfg = cfg.clone()
        if device:
            self.cfg.MODEL.DEVICE = device
        elif self.cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
            self.cfg.MODEL.DEVICE = "cpu"
        self.cfg.MODEL.WEIGHTS = ""
        self.cfg.freeze()
        self.batch_size = max(1, batch_size)
        self.model = build_model(self.cfg)
        self._load_state(data)
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
    ) -> Detector:
        """Load the version written by ``save_model_version`` into ``directory``."""
        root = Path(directory)
        cfg = load_config(root / CONFIG_FILE)
        return cls(
            cfg, root / CHECKPOINT_FILE, expected_sha256=expected_sha256, device=device,
            batch_size=batch_size,
        )

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
        with torch.inference_mode():
            for indices in groups.values():
                for start in range(0, len(indices), self.batch_size):
                    chunk = indices[start : start + self.batch_size]
                    results = self.model([prepared[i] for i in chunk])
                    for i, res in zip(chunk, results, strict=True):
                        out[i] = self._to_detections(res["instances"], prepared[i])
        return [d for d in out if d is not None]

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
        return Detections(
            boxes=inst.pred_boxes.tensor.numpy().astype(np.float64).reshape(-1, 4),
            scores=inst.scores.numpy().astype(np.float64),
            classes=inst.pred_classes.numpy().astype(np.int64),
            probs=probs.numpy().astype(np.float64).reshape(-1, k),
            image_size=(int(item["height"]), int(item["width"])),
        )
