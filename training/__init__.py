"""The ML library (no Django): Detectron2 config, Detector, trainer, metrics, active learning.

Populated by the ML-backend and training capabilities; it depends only on the
pure packages of ``annotations`` (``imaging``, ``formats``, ``label_studio``).
"""
