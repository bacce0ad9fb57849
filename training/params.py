"""Training-run parameters: the schema every caller (API, CLI, AL loop) validates against.

Pure (no detectron2, no Django): the platform validates a run's params when
the run is created, long before a GPU worker builds the Detectron2 config, so
a typo or an out-of-range value is refused at the API with the same
``invalid_params`` shape as consensus and AL params (:mod:`annotations.params`).
"""

from __future__ import annotations

from annotations.params import Boolean, Choice, Number, Schema, invalid_param

#: Model presets: the detector's (``training.config.build_config``) and the image-level
#: classifier's (``training.classifier``); ``tiny`` exists for both.
DETECTOR_PRESETS = ("r50_fpn", "tiny")
CLASSIFIER_PRESETS = ("densenet121", "tiny")
SEGMENTER_PRESETS = ("unet", "tiny")
PRESETS = ("r50_fpn", "tiny", "densenet121", "unet")
TASKS = ("detector", "classifier", "segmenter")
_TASK_PRESETS = {"detector": DETECTOR_PRESETS, "classifier": CLASSIFIER_PRESETS,
                 "segmenter": SEGMENTER_PRESETS}

TRAINING_PARAMS = Schema("training", {
    # what to train: the box detector, the image-level classifier of the findings, or
    # the mask model (a U-Net over the project's mask classes)
    "task": Choice("detector", TASKS),
    # r50_fpn (the detector's default; densenet121 the classifier's and unet the
    # segmenter's, used when such a run names no preset), tiny (any task, for tests
    # and CPU demos)
    "preset": Choice("r50_fpn", PRESETS),
    "max_iter": Number(2000, lo=1, hi=1_000_000, integer=True),
    # None: the preset's own learning rate (it depends on the weights' initialisation)
    "base_lr": Number(None, lo=0.0, hi=1.0, nullable=True),
    "ims_per_batch": Number(4, lo=1, hi=256, integer=True),
    # 0 is allowed: train on everything (small projects, benchmarks)
    "val_fraction": Number(0.1, lo=0.0, hi=0.9),
    "checkpoint_period": Number(500, lo=1, hi=1_000_000, integer=True),
    # soft labels: each consensus box is a positive with its consensus score (the
    # reader model's posterior) and background with the rest (training.modeling)
    "soft_labels": Boolean(False),
    # None: a fresh seed each run; a number makes two runs differ only by their params
    "seed": Number(None, lo=0, hi=2**31 - 1, integer=True, nullable=True),
    # detector only: training processes on each machine over torch.distributed (one per
    # GPU with NCCL; CPU processes with gloo where there is no GPU), and machines (the gpu
    # worker's is rank 0; the others join with ``manage.py train_join``); the world size
    # is their product and ims_per_batch the total over all processes
    "processes": Number(1, lo=1, hi=64, integer=True),
    "machines": Number(1, lo=1, hi=64, integer=True),
})


def training_params(params: dict | None) -> dict:
    """Validated params; a run that names no preset gets its task's default, and a
    preset of another task is refused by name."""
    merged = TRAINING_PARAMS.validate(params)
    allowed = _TASK_PRESETS[merged["task"]]
    if "preset" not in (params or {}):
        merged["preset"] = allowed[0]
    if merged["preset"] not in allowed:
        raise invalid_param("training", "preset", f"{merged['preset']!r} is not a "
                            f"{merged['task']} preset; one of {list(allowed)}")
    world = merged["processes"] * merged["machines"]
    if world > 1 and merged["task"] != "detector":
        raise invalid_param("training", "processes", "only the detector trains in several "
                            "processes")
    if merged["ims_per_batch"] % world:
        raise invalid_param("training", "ims_per_batch", "must be a multiple of processes x "
                            "machines (each process takes an equal share of a batch)")
    return merged


def world_size(params: dict) -> int:
    """Training processes over all machines."""
    return int(params.get("processes") or 1) * int(params.get("machines") or 1)
