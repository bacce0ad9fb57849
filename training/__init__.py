"""The ML library (no Django): Detectron2 config, Detector, trainer, metrics, active learning.

Populated by the ML-backend and training capabilities; it depends only on the
pure packages of ``annotations`` (``imaging``, ``formats``, ``label_studio``,
``errors``).

Modules (each imports ``training.compat`` before anything from Detectron2):

* ``compat``: shims for Detectron2 0.6 on today's Pillow / torch (no-ops upstream);
* ``config``: ``add_cxr_config``, ``build_config`` (Faster R-CNN R50-FPN and a
  tiny CPU preset, in code: no model-zoo YAMLs);
* ``modeling``: ``CXRROIHeads``, whose detections keep their class-probability vector;
* ``inputs``: radiograph pixels -> model input, shared by training and inference;
* ``datasets`` / ``mapper``: COCO exports as Detectron2 datasets ("No finding" kept);
* ``trainer``: ``CXRTrainer`` (a ``DefaultTrainer``) with a progress callback;
* ``artifacts``: a model version's files: ``save_model_version``, and
  ``read_version`` (every file checked against one digest before it is parsed;
  YAML loaded safely);
* ``detector``: ``Detector`` (verified model versions, batched inference).
"""
