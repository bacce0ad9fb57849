"""The compat shims make Detectron2 0.6 importable and usable on today's libraries."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_compat_then_detectron2_imports_cleanly():
    code = (
        "import training.compat, PIL.Image\n"
        "import detectron2.data.transforms, detectron2.modeling, detectron2.engine\n"
        "import detectron2.evaluation, detectron2.checkpoint\n"
        "assert PIL.Image.LINEAR == PIL.Image.BILINEAR\n"
        "import sys; assert not any(m.startswith('django') for m in sys.modules)\n"
        "print('ok')"
    )
    # -W filters are installed first, so compat's own filters must take precedence over them.
    proc = subprocess.run([sys.executable, "-W", "error::FutureWarning", "-c", code], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "ok"


def test_extent_transform_uses_the_pillow_alias():
    import numpy as np

    import training.compat  # noqa: F401

    # isort: split
    from detectron2.data.transforms import ExtentTransform

    out = ExtentTransform((0, 0, 8, 8), (4, 4)).apply_image(np.zeros((8, 8, 3), np.uint8))
    assert out.shape == (4, 4, 3)


def test_shims_are_feature_detected():
    import training.compat as compat

    # Pillow >= 10 lacks LINEAR, so the alias is applied here; on an old Pillow it would not be.
    assert "pillow_linear" in compat.APPLIED or hasattr(__import__("PIL.Image").Image, "LINEAR")
