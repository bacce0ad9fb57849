"""Pure packages never import Django (they must run inside training and ml_backend)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PURE = [
    "annotations.errors", "annotations.events", "annotations.taxonomy",
    "annotations.public_data", "annotations.registry",
    "annotations.archives", "annotations.geometry", "annotations.params", "training.params",
    "training.active_learning", "training.metrics", "training.uncertainty",
    "annotations.imaging.render", "annotations.imaging.loader", "annotations.imaging.deid",
    "annotations.imaging.deid_profile", "annotations.imaging.burned_in",
    "annotations.imaging.pseudonym", "annotations.imaging.synthetic",
    "annotations.consensus", "annotations.formats", "annotations.formats.registry",
    "annotations.label_studio.regions", "annotations.label_studio.config",
    "annotations.label_studio.client", "annotations.label_studio.server",
    "training", "ml_backend",
]


@pytest.mark.parametrize("module", PURE)
def test_pure_module_does_not_import_django(module):
    code = (f"import sys, importlib; importlib.import_module({module!r}); "
            "bad = [m for m in sys.modules if m == 'django' or m.startswith('django.')]; "
            "print(len(bad)); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-1500:]


def test_annotations_never_imports_ml_backend():
    offenders = [
        str(p.relative_to(ROOT)) for p in (ROOT / "annotations").rglob("*.py")
        if re.search(r"^\s*(from|import)\s+ml_backend", p.read_text(), re.M)
    ]
    assert offenders == []
