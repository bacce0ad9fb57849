"""Attacks on a published model version's files: every file the loader reads is
covered by the one digest, and the config is parsed with the safe loader only."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import yaml

from annotations.errors import DomainError
from training import artifacts
from training.artifacts import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    MANIFEST_FILE,
    manifest_bytes,
    read_version,
    save_model_version,
)


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> tuple[Path, str]:
    """A tiny untrained model published as a version: (folder, registry digest)."""
    from detectron2.modeling import build_model

    import training.modeling  # noqa: F401  (registers CXRROIHeads)
    from training.config import build_config

    cfg = build_config(2, preset="tiny", class_names=["a", "b"], device="cpu")
    folder = tmp_path_factory.mktemp("published") / "v1"
    _, digest = save_model_version(build_model(cfg), cfg, folder)
    return folder, digest


@pytest.fixture
def copy(published, tmp_path) -> Path:
    shutil.copytree(published[0], tmp_path / "v1")
    return tmp_path / "v1"


def _payload(marker: Path) -> str:
    """YAML that creates ``marker`` when loaded with ``yaml.unsafe_load``."""
    return f"!!python/object/apply:builtins.open [{str(marker)!r}, 'w']"


def _forge_manifest(folder: Path) -> str:
    """What someone who can write the models volume does after editing a file."""
    files = {n: (folder / n).read_bytes() for n in (CONFIG_FILE, CHECKPOINT_FILE)}
    data = manifest_bytes(files)
    (folder / MANIFEST_FILE).write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _inject(folder: Path, marker: Path) -> None:
    text = (folder / CONFIG_FILE).read_text()
    (folder / CONFIG_FILE).write_text(text.replace("INITIAL_WEIGHTS: ''",
                                                   f"INITIAL_WEIGHTS: {_payload(marker)}"))
    assert _payload(marker) in (folder / CONFIG_FILE).read_text()


def test_payload_is_live_under_an_unsafe_loader(tmp_path):
    """Sanity: the tag below really runs code when a loader allows it."""
    marker = tmp_path / "ran"
    handle = yaml.unsafe_load(f"x: {_payload(marker)}")["x"]
    handle.close()
    assert marker.exists()


def test_manifest_lists_every_file_the_loader_reads_and_is_the_digest(published):
    folder, digest = published
    manifest = (folder / MANIFEST_FILE).read_bytes()
    names = [line.split("  ")[1] for line in manifest.decode().splitlines()]
    assert names == [CONFIG_FILE, CHECKPOINT_FILE]
    assert hashlib.sha256(manifest).hexdigest() == digest
    assert read_version(folder, digest).digest == digest
    assert read_version(folder).digest == digest


@pytest.mark.parametrize("registry", [False, True])
def test_tampered_config_with_python_tag_is_refused_before_parsing(copy, published, tmp_path,
                                                                    monkeypatch, registry):
    marker = tmp_path / "ran"
    _inject(copy, marker)

    def must_not_parse(*args, **kwargs):
        raise AssertionError("the config was parsed before its checksum was checked")

    monkeypatch.setattr(artifacts, "config_from_yaml", must_not_parse)
    monkeypatch.setattr(artifacts.yaml, "safe_load", must_not_parse)
    with pytest.raises(DomainError) as err:
        read_version(copy, published[1] if registry else None)
    assert err.value.code == "model_checksum_mismatch"
    assert not marker.exists()


def test_changed_config_value_is_refused(copy, published):
    text = (copy / CONFIG_FILE).read_text()
    (copy / CONFIG_FILE).write_text(text.replace("SCORE_THRESH_TEST: 0.05",
                                                 "SCORE_THRESH_TEST: 0.9"))
    assert (copy / CONFIG_FILE).read_text() != text
    for expected in (None, published[1]):
        with pytest.raises(DomainError) as err:
            read_version(copy, expected)
        assert err.value.code == "model_checksum_mismatch"
        if expected is None:
            assert CONFIG_FILE in err.value.message


def test_rewritten_manifest_does_not_fool_the_registry_digest(copy, published):
    text = (copy / CONFIG_FILE).read_text()
    (copy / CONFIG_FILE).write_text(text.replace("SCORE_THRESH_TEST: 0.05",
                                                 "SCORE_THRESH_TEST: 0.9"))
    forged = _forge_manifest(copy)
    assert forged != published[1]
    with pytest.raises(DomainError) as err:
        read_version(copy, published[1])
    assert err.value.code == "model_checksum_mismatch"


@pytest.mark.parametrize("registry", [False, True])
def test_unsafe_tag_is_never_executed_even_when_its_checksum_matches(copy, tmp_path,
                                                                     registry):
    marker = tmp_path / "ran"
    _inject(copy, marker)
    forged = _forge_manifest(copy)
    with pytest.raises(DomainError) as err:
        read_version(copy, forged if registry else None)
    assert err.value.code == "invalid_model_config"
    assert not marker.exists()


def test_base_inheritance_is_refused_even_when_its_checksum_matches(copy, tmp_path):
    """``_BASE_`` would make the loader read a file the digest does not cover."""
    (tmp_path / "base.yaml").write_text("MODEL: {DEVICE: cpu}\n")
    text = (copy / CONFIG_FILE).read_text()
    (copy / CONFIG_FILE).write_text(f"_BASE_: {tmp_path / 'base.yaml'}\n{text}")
    with pytest.raises(DomainError) as err:
        read_version(copy, _forge_manifest(copy))
    assert err.value.code == "invalid_model_config" and "_BASE_" in err.value.message


def test_swapped_checkpoint_is_refused(copy, published):
    data = bytearray((copy / CHECKPOINT_FILE).read_bytes())
    data[-10] ^= 0xFF
    (copy / CHECKPOINT_FILE).write_bytes(bytes(data))
    for expected in (None, published[1]):
        with pytest.raises(DomainError) as err:
            read_version(copy, expected)
        assert err.value.code == "model_checksum_mismatch"


def test_folder_from_before_the_manifest_is_refused(copy):
    """Old versions had ``model.pth.sha256`` only (config not covered): republish them."""
    weights = (copy / CHECKPOINT_FILE).read_bytes()
    old_digest = hashlib.sha256(weights).hexdigest()
    (copy / MANIFEST_FILE).unlink()
    (copy / f"{CHECKPOINT_FILE}.sha256").write_text(f"{old_digest}  {CHECKPOINT_FILE}\n")
    with pytest.raises(DomainError) as err:
        read_version(copy)
    assert err.value.code == "model_checksum_missing"
    with pytest.raises(DomainError) as err:
        read_version(copy, old_digest)
    assert err.value.code == "model_checksum_mismatch"


def test_oversized_config_is_refused_before_it_is_read(copy, monkeypatch):
    monkeypatch.setitem(artifacts.MAX_FILE_BYTES, CONFIG_FILE, 100)
    with pytest.raises(DomainError) as err:
        read_version(copy)
    assert err.value.code == "invalid_model" and "larger than" in err.value.message
