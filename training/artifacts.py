"""A model version's files on disk, written and read back verified whole.

A version folder holds exactly what inference reads, plus one manifest:

* ``config.yaml``: the full Detectron2 config (``training.config`` keys included);
* ``model.pth``: ``{"model": state_dict}``, tensors only (``torch.load(weights_only=True)``);
* ``manifest.sha256``: one ``<sha256>  <file>`` line per file above, sorted by
  name, ``\\n``-terminated (``sha256sum -c manifest.sha256`` checks it by hand).

The version's digest, the one checksum the registry stores
(``ModelVersion.sha256``), is the SHA-256 of the manifest's bytes.  Because the
manifest is canonical, it is recomputed from the files themselves whenever the
caller knows the expected digest, so a version is verified against the
registry even if its manifest file was rewritten.

Why everything is verified before anything is parsed: the models folder is a
volume other processes can write, and a parser is attack surface.  The bytes
that are hashed are the bytes that are parsed (read once, no re-read), the
YAML goes through ``yaml.safe_load`` only (Detectron2's ``merge_from_file``
falls back to ``yaml.unsafe_load``, i.e. runs code named in the file, so it is
never used here), and the weights through ``torch.load(weights_only=True)``.

Folders written before the manifest existed (``model.pth.sha256`` only) are
refused (``model_checksum_missing``, or ``model_checksum_mismatch`` against a
registry digest that covered only the weights): republish them.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

import training.compat  # noqa: F401  (patches libraries before detectron2 loads)

# isort: split
from detectron2.config import CfgNode

from annotations.errors import DomainError
from training.config import empty_config

CONFIG_FILE = "config.yaml"
CHECKPOINT_FILE = "model.pth"
MANIFEST_FILE = "manifest.sha256"
#: Every file the loader reads, hence every file the digest covers.
VERSION_FILES = (CONFIG_FILE, CHECKPOINT_FILE)
#: Files larger than this are refused before they are read (a config is ~10 KB;
#: an R50-FPN checkpoint ~170 MB).
MAX_FILE_BYTES = {CONFIG_FILE: 1 << 20, CHECKPOINT_FILE: 4 << 30, MANIFEST_FILE: 64 << 10}
#: Detectron2's ``_BASE_`` inheritance reads further files the digest does not cover.
BASE_KEY = "_BASE_"


@dataclass(frozen=True)
class VersionFiles:
    """A version's verified contents: the parsed config, the weights' bytes, the digest."""

    cfg: CfgNode
    weights: bytes
    digest: str


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest_bytes(files: Mapping[str, bytes]) -> bytes:
    """The canonical manifest of ``files`` (name -> content): sorted, one line each."""
    return "".join(f"{sha256_bytes(files[name])}  {name}\n" for name in sorted(files)).encode()


def version_digest(files: Mapping[str, bytes]) -> str:
    """The one checksum of a version: SHA-256 over its canonical manifest."""
    return sha256_bytes(manifest_bytes(files))


def save_model_version(model: torch.nn.Module, cfg: CfgNode,
                       out_dir: str | Path) -> tuple[Path, str]:
    """Write the version's files and manifest; return (checkpoint path, version digest).

    Only the weights are saved (no optimizer or scheduler state): a version is
    for inference and for initialising the next training run.  The manifest is
    written last, so a folder whose writing was interrupted is never loadable.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_FILE).unlink(missing_ok=True)
    buffer = io.BytesIO()
    torch.save({"model": {k: v.detach().cpu() for k, v in model.state_dict().items()}}, buffer)
    files = {CONFIG_FILE: cfg.dump().encode(), CHECKPOINT_FILE: buffer.getvalue()}
    for name, data in files.items():
        (out / name).write_bytes(data)
    manifest = manifest_bytes(files)
    (out / MANIFEST_FILE).write_bytes(manifest)
    return out / CHECKPOINT_FILE, sha256_bytes(manifest)


def _read_bounded(path: Path) -> bytes:
    limit = MAX_FILE_BYTES[path.name]
    try:
        size = path.stat().st_size
    except FileNotFoundError as exc:
        raise DomainError("invalid_model", f"model file {path.name} is missing",
                          status=422) from exc
    if size > limit:
        raise DomainError("invalid_model", f"model file {path.name} is larger than "
                          f"{limit} bytes", status=422)
    return path.read_bytes()


def _mismatch(message: str, expected: str, actual: str) -> DomainError:
    return DomainError("model_checksum_mismatch", f"{message}; refusing to load it",
                       status=422, detail={"expected": expected, "actual": actual})


def _check_against_manifest(root: Path, files: Mapping[str, bytes]) -> None:
    """Without a registry digest, the folder's own manifest must list these exact bytes."""
    path = root / MANIFEST_FILE
    if not path.is_file():
        raise DomainError("model_checksum_missing", f"no {MANIFEST_FILE} in {root.name}: pass "
                          "the registry's expected_sha256 or republish the version", status=422)
    recorded = _read_bounded(path)
    actual = manifest_bytes(files)
    if recorded != actual:
        listed = {}
        for line in recorded.decode("utf-8", "replace").splitlines():
            digest, _, name = line.partition("  ")
            listed[name] = digest
        changed = [n for n in sorted(files) if listed.get(n) != sha256_bytes(files[n])]
        raise _mismatch(f"{', '.join(changed) or MANIFEST_FILE} of {root.name} does not match "
                        f"{MANIFEST_FILE}", sha256_bytes(recorded), sha256_bytes(actual))


def read_version(directory: str | Path, expected_sha256: str | None = None) -> VersionFiles:
    """Read a version folder once, verify every file the loader uses, then parse.

    With ``expected_sha256`` (the registry's digest) the digest is recomputed
    from the files; without it the folder's manifest must match them.  Either
    way a mismatch raises ``DomainError("model_checksum_mismatch")`` before the
    config or the weights are parsed.
    """
    root = Path(directory)
    files = {name: _read_bounded(root / name) for name in VERSION_FILES}
    digest = version_digest(files)
    if expected_sha256:
        expected = expected_sha256.strip().lower()
        if digest != expected:
            raise _mismatch(f"model version {root.name} does not match its recorded checksum",
                            expected, digest)
    else:
        _check_against_manifest(root, files)
    return VersionFiles(cfg=config_from_yaml(files[CONFIG_FILE]),
                        weights=files[CHECKPOINT_FILE], digest=digest)


def config_from_yaml(text: bytes | str) -> CfgNode:
    """A saved config merged over Detectron2 defaults plus our keys, parsed safely.

    ``yaml.safe_load`` refuses every ``!!python/...`` tag, so a config can
    only carry plain data.  The cfg is built from that dict (what Detectron2's
    ``merge_from_file`` does after loading, minus its unsafe fallback and its
    ``_BASE_`` file inheritance); only the current config VERSION is accepted,
    because upgrading old versions goes through file-based code paths.
    """
    try:
        loaded: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DomainError("invalid_model_config", "config.yaml is not plain YAML data "
                          f"({type(exc).__name__}); only safe YAML is loaded",
                          status=422) from exc
    if not isinstance(loaded, dict):
        raise DomainError("invalid_model_config", "config.yaml is not a mapping", status=422)
    if BASE_KEY in loaded:
        raise DomainError("invalid_model_config", f"config.yaml may not use {BASE_KEY}: a "
                          "version is one self-contained file", status=422)
    cfg = empty_config()
    if loaded.get("VERSION") != cfg.VERSION:
        raise DomainError("invalid_model_config", f"config VERSION {loaded.get('VERSION')!r} "
                          f"is not {cfg.VERSION}", status=422)
    try:
        cfg.merge_from_other_cfg(CfgNode(loaded))
    except (KeyError, ValueError, TypeError, AssertionError) as exc:
        raise DomainError("invalid_model_config", f"config.yaml does not fit this "
                          f"platform's config: {exc}", status=422) from exc
    return cfg


def load_task_version(directory: str | Path, expected_sha256: str | None, task: str,
                      build: Any) -> tuple[torch.nn.Module, VersionFiles]:
    """A verified version of the kind ``task`` (``CXR.TASK``): the model ``build(cfg)``
    makes, with the version's weights loaded (``weights_only``: no pickled code)."""
    files = read_version(directory, expected_sha256)  # verified before parsing
    if files.cfg.CXR.TASK != task:
        raise DomainError("invalid_model", f"{Path(directory).name} is not a {task}",
                          status=422)
    model = build(files.cfg)
    blob = torch.load(io.BytesIO(files.weights), map_location="cpu", weights_only=True)
    model.load_state_dict(blob["model"])
    return model, files
