"""The platform's Detectron2 configuration, written in code.

Detectron2's model-zoo YAMLs are not installed by our build (and
``detectron2.model_zoo`` needs ``pkg_resources``), so Faster R-CNN R50-FPN is
spelled out here with the values of the zoo's ``faster_rcnn_R_50_FPN_3x``,
adapted to chest radiographs:

* no horizontal flip: chest anatomy is not mirror-symmetric (heart, aortic
  knob), so a flipped film is an implausible training example;
* images without boxes are kept (``FILTER_EMPTY_ANNOTATIONS = False``): the
  "No finding" radiographs are the negatives that teach the detector to be
  quiet;
* a larger test size (1024 px short side) than COCO's 800: lesions are small
  relative to a whole chest.

Initial weights are a setting (``weights``: a local path or a URL that
Detectron2's checkpointer understands).  ``None`` means random init, the only
option on machines without internet; random init needs GroupNorm (the default
FrozenBatchNorm has no statistics to freeze, and training diverges at once)
and a smaller learning rate.  Production training should start from COCO- or
ImageNet-pretrained weights (e.g. Detectron2's ``R-50.pkl`` or a COCO
Faster R-CNN checkpoint): random init needs far more data and iterations.

Presets:

* ``r50_fpn``: the production detector;
* ``tiny``: ResNet-18 depth, 64-channel FPN, few proposals and RoIs and a
  128 px input, for CPU tests and simulations (train step well under a
  second on 2 cores).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

import training.compat  # noqa: F401  (patches libraries before detectron2 loads)

# isort: split
from detectron2.config import CfgNode, get_cfg

from training.params import PRESETS

#: Registered by ``training.modeling``: StandardROIHeads whose predictor also
#: returns every kept detection's full class-probability vector.
ROI_HEADS_NAME = "CXRROIHeads"


def add_cxr_config(cfg: CfgNode) -> None:
    """Add the platform's own keys under ``cfg.CXR`` (Detectron2's extension idiom).

    * ``PRESET``: which preset built the config (informational);
    * ``CLASS_NAMES``: box class names in model class-index order (= taxonomy
      ``class_id`` order; COCO category id = index + 1);
    * ``INITIAL_WEIGHTS``: where training started ("" = random init);
    * ``INPUT_FORMAT``: ``"GRAY3"``, a grayscale radiograph replicated to 3
      channels by ``training.inputs.to_model_image`` both in training and at
      inference, so the normalisation cannot drift between the two;
    * ``AUGMENT`` / ``AUG_INTENSITY`` / ``AUG_ROTATION`` / ``AUG_FLIP``: training
      augmentations (brightness and contrast within +-AUG_INTENSITY, rotation
      within +-AUG_ROTATION degrees, optional horizontal flip; scale comes from
      the multi-size resize);
    * ``ONE_CLASS_PER_BOX``: at inference keep only each proposal's most
      probable class (False = Detectron2's behaviour, one detection per class
      above the threshold; see ``training.modeling``);
    * ``SOFT_LABELS``: train the box classifier on soft targets, each ground
      truth box weighted by its ``weight`` (the consensus score; see
      ``training.modeling``);
    * ``TASK``: ``"detector"``, or ``"classifier"`` for an image-level classifier
      version (``training.classifier``), whose keys are under ``CLASSIFIER``
      (``CLASS_NAMES``, ``INPUT_SIZE``, ``BASE_LR``), or ``"segmenter"`` for a mask
      model (``training.segmenter``, a MONAI U-Net), keys under ``SEGMENTER``
      (``CLASS_NAMES``, ``INPUT_SIZE``, ``BASE_LR``, ``CHANNELS``, ``STRIDES``).
    """
    cfg.CXR = CfgNode()
    cfg.CXR.PRESET = "r50_fpn"
    cfg.CXR.CLASS_NAMES = []
    cfg.CXR.INITIAL_WEIGHTS = ""
    cfg.CXR.INPUT_FORMAT = "GRAY3"
    # Training augmentations suited to radiographs (exposure varies, patients are
    # not perfectly aligned); horizontal flip is off by default because it puts
    # the heart on the wrong side, which a detector of cardiomegaly should not learn.
    cfg.CXR.AUGMENT = True
    cfg.CXR.AUG_INTENSITY = 0.15
    cfg.CXR.AUG_ROTATION = 5.0
    cfg.CXR.AUG_FLIP = False
    cfg.CXR.ONE_CLASS_PER_BOX = False
    cfg.CXR.SOFT_LABELS = False
    cfg.CXR.TASK = "detector"
    cfg.CXR.CLASSIFIER = CfgNode()
    cfg.CXR.CLASSIFIER.CLASS_NAMES = []
    cfg.CXR.CLASSIFIER.INPUT_SIZE = 512
    cfg.CXR.CLASSIFIER.BASE_LR = 1e-4
    cfg.CXR.SEGMENTER = CfgNode()
    cfg.CXR.SEGMENTER.CLASS_NAMES = []
    cfg.CXR.SEGMENTER.INPUT_SIZE = 512
    cfg.CXR.SEGMENTER.BASE_LR = 1e-3
    cfg.CXR.SEGMENTER.CHANNELS = [32, 64, 128, 256, 512]
    cfg.CXR.SEGMENTER.STRIDES = [2, 2, 2, 2]


def default_device() -> str:
    """``"cuda"`` when a GPU is usable, else ``"cpu"``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def empty_config() -> CfgNode:
    """Detectron2 defaults plus our keys: the base every saved config merges into."""
    cfg = get_cfg()
    add_cxr_config(cfg)
    return cfg


def build_config(
    num_classes: int,
    *,
    preset: str = "r50_fpn",
    weights: str | None = None,
    device: str | None = None,
    class_names: Sequence[str] | None = None,
    norm: str | None = None,
) -> CfgNode:
    """A complete Faster R-CNN FPN config for ``num_classes`` box classes.

    ``norm`` overrides the backbone/FPN normalisation (default: ``"GN"`` for
    random init, ``"FrozenBN"`` when starting from pretrained ``weights``;
    pass ``"GN"`` when fine-tuning one of our own GN-trained versions).
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {PRESETS}")
    if num_classes < 1:
        raise ValueError("num_classes must be >= 1")
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError("class_names must have num_classes entries")

    cfg = empty_config()
    _faster_rcnn_fpn(cfg, num_classes)
    (_tiny if preset == "tiny" else _r50)(cfg)
    from_scratch = not weights
    _weights(cfg, weights or "", norm or ("GN" if from_scratch else "FrozenBN"))
    if from_scratch and preset == "r50_fpn":
        cfg.SOLVER.BASE_LR = 0.005  # GN from random init: half the pretrained LR
    cfg.CXR.PRESET = preset
    cfg.CXR.CLASS_NAMES = names
    cfg.MODEL.DEVICE = device or default_device()
    return cfg


def _faster_rcnn_fpn(cfg: CfgNode, num_classes: int) -> None:
    """What every preset shares: the zoo's Base-RCNN-FPN structure."""
    m = cfg.MODEL
    m.META_ARCHITECTURE = "GeneralizedRCNN"
    m.MASK_ON = False
    m.KEYPOINT_ON = False
    m.BACKBONE.NAME = "build_resnet_fpn_backbone"
    m.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    m.RESNETS.DEFORM_ON_PER_STAGE = [False] * 4  # needs the compiled _C: never
    m.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    m.ANCHOR_GENERATOR.SIZES = [[32], [64], [128], [256], [512]]
    m.ANCHOR_GENERATOR.ASPECT_RATIOS = [[0.5, 1.0, 2.0]]
    m.RPN.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
    m.RPN.PRE_NMS_TOPK_TRAIN = 2000
    m.RPN.PRE_NMS_TOPK_TEST = 1000
    m.RPN.POST_NMS_TOPK_TRAIN = 1000
    m.RPN.POST_NMS_TOPK_TEST = 1000
    m.ROI_HEADS.NAME = ROI_HEADS_NAME
    m.ROI_HEADS.IN_FEATURES = ["p2", "p3", "p4", "p5"]
    m.ROI_HEADS.NUM_CLASSES = num_classes
    m.RETINANET.NUM_CLASSES = num_classes
    m.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
    m.ROI_BOX_HEAD.NUM_FC = 2
    m.ROI_BOX_HEAD.POOLER_RESOLUTION = 7
    # Grayscale replicated to 3 channels: channel order is moot, and keeping
    # Detectron2's BGR ImageNet statistics keeps MSRA-pretrained weights valid.
    cfg.INPUT.FORMAT = "BGR"
    cfg.INPUT.RANDOM_FLIP = "none"
    cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS = False
    cfg.DATASETS.TRAIN = ()
    cfg.DATASETS.TEST = ()
    cfg.TEST.DETECTIONS_PER_IMAGE = 100
    cfg.VERSION = 2


def _r50(cfg: CfgNode) -> None:
    cfg.MODEL.RESNETS.DEPTH = 50
    cfg.INPUT.MIN_SIZE_TRAIN = (800, 864, 928, 992, 1024)
    cfg.INPUT.MAX_SIZE_TRAIN = 1333
    cfg.INPUT.MIN_SIZE_TEST = 1024
    cfg.INPUT.MAX_SIZE_TEST = 1333
    cfg.SOLVER.IMS_PER_BATCH = 8
    cfg.SOLVER.BASE_LR = 0.01
    cfg.SOLVER.MAX_ITER = 20000
    cfg.SOLVER.STEPS = (15000, 18000)
    cfg.SOLVER.WARMUP_ITERS = 1000
    cfg.SOLVER.CHECKPOINT_PERIOD = 2000
    cfg.DATALOADER.NUM_WORKERS = 4


def _tiny(cfg: CfgNode) -> None:
    """Measured in docs (DETECTRON2.md): ~12 M parameters, sub-second CPU steps."""
    m = cfg.MODEL
    m.RESNETS.DEPTH = 18
    m.RESNETS.RES2_OUT_CHANNELS = 64  # BasicBlock stages require it
    m.FPN.OUT_CHANNELS = 64
    m.ANCHOR_GENERATOR.SIZES = [[16], [32], [64], [128], [256]]
    m.RPN.PRE_NMS_TOPK_TRAIN = 1000
    m.RPN.PRE_NMS_TOPK_TEST = 500
    m.RPN.POST_NMS_TOPK_TRAIN = 200
    m.RPN.POST_NMS_TOPK_TEST = 200
    m.RPN.BATCH_SIZE_PER_IMAGE = 128
    m.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 64
    m.ROI_BOX_HEAD.FC_DIM = 256
    cfg.INPUT.MIN_SIZE_TRAIN = (128,)
    cfg.INPUT.MAX_SIZE_TRAIN = 256
    cfg.INPUT.MIN_SIZE_TEST = 128
    cfg.INPUT.MAX_SIZE_TEST = 256
    cfg.SOLVER.IMS_PER_BATCH = 4
    cfg.SOLVER.BASE_LR = 0.01
    cfg.SOLVER.MAX_ITER = 1000
    cfg.SOLVER.STEPS = ()
    cfg.SOLVER.WARMUP_ITERS = 10
    cfg.SOLVER.CHECKPOINT_PERIOD = 100000
    cfg.DATALOADER.NUM_WORKERS = 0


def _weights(cfg: CfgNode, weights: str, norm: str) -> None:
    """Initial weights and the normalisation / freezing that goes with them."""
    cfg.CXR.INITIAL_WEIGHTS = weights
    cfg.MODEL.WEIGHTS = weights
    cfg.MODEL.RESNETS.NORM = norm
    cfg.MODEL.FPN.NORM = "" if norm == "FrozenBN" else norm
    # Random init: every layer must learn; pretrained: keep the stem and res2 frozen.
    cfg.MODEL.BACKBONE.FREEZE_AT = 2 if weights and norm == "FrozenBN" else 0
