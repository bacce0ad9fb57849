"""Shims that let Detectron2 0.6 (2021 sources) run on today's libraries.

Import this module before anything from ``detectron2``: every module in
``training`` does ``import training.compat  # noqa: F401`` first.  Each shim
detects the problem by feature and is a no-op when the installed library
already behaves (upstream Detectron2 main carries the same fixes), so the
platform works with either the ``scripts/install_detectron2`` build or an
upstream install.

Not shimmed, because the platform never reaches it (see docs and
``scripts/install_detectron2``):

* ``detectron2._C`` is an empty module in our build: rotated-box and
  deformable ops raise ``AttributeError``; our configs never name them and
  ``COCOEvaluator`` must be built with ``use_fast_impl=False``;
* ``detectron2.model_zoo`` imports ``pkg_resources`` (needs ``setuptools<81``)
  and its YAMLs are not installed: ``training.config`` writes the config in
  code and never imports ``model_zoo``;
* ``np.int`` / ``np.float`` (removed in NumPy 2) are used only by the
  semantic-segmentation evaluator, which a box detector never uses.
"""

from __future__ import annotations

import warnings

import PIL.Image

APPLIED: list[str] = []
"""Names of the shims this process needed (for logs and tests)."""


def _pillow_linear() -> None:
    # Pillow 10 removed the LINEAR alias; detectron2 0.6 ExtentTransform uses it as a default arg.
    if not hasattr(PIL.Image, "LINEAR"):
        PIL.Image.LINEAR = PIL.Image.BILINEAR  # type: ignore[attr-defined]
        APPLIED.append("pillow_linear")


def _quiet_torch_deprecations() -> None:
    # Warnings only, about 2021 call sites in detectron2 0.6 / fvcore, repeated on every run.
    # fvcore (its dependency) applies torch.jit.script at import, deprecated in today's torch:
    warnings.filterwarnings(
        "ignore", message=r".*torch\.jit\.script.* is deprecated", category=FutureWarning
    )
    # Its anchor generator calls torch.meshgrid without ``indexing`` ("ij" is meant):
    warnings.filterwarnings(
        "ignore", message=r"torch\.meshgrid: in an upcoming release", category=UserWarning
    )
    APPLIED.append("quiet_torch_deprecations")


_pillow_linear()
_quiet_torch_deprecations()
