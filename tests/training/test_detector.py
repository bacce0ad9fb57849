"""Train the tiny preset to overfit one lesion, then check the Detector's contract."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from annotations.errors import DomainError
from tests.training.films import LESION_CLASS, TRUTH, film, iou
from training.detector import CHECKPOINT_FILE, MANIFEST_FILE, Detections, Detector


@pytest.fixture(scope="module")
def detector(trained_version):
    return Detector.from_dir(trained_version.directory, device="cpu")


def test_training_reports_progress(trained_version):
    done = [p.iteration for p in trained_version.progress]
    assert done[-1] == trained_version.progress[-1].max_iter and done == sorted(done)
    assert "total_loss" in trained_version.progress[-1].losses


def test_overfit_model_finds_the_lesion(detector, trained_version):
    print(f"train-to-overfit: {trained_version.train_seconds:.1f} s")
    det = detector.predict([film(0)])[0]
    assert isinstance(det, Detections) and det.image_size == (128, 128)
    assert len(det) >= 1
    top = int(np.argmax(det.scores))
    assert det.classes[top] == LESION_CLASS
    assert iou(det.boxes[top], TRUTH) > 0.5
    assert det.boxes.dtype == np.float64 and det.boxes.shape == (len(det), 4)


@pytest.mark.parametrize("one_class_per_box", [False, True])
def test_probs_are_full_softmax_rows(trained_version, one_class_per_box):
    def configure(cfg) -> None:
        cfg.CXR.ONE_CLASS_PER_BOX = one_class_per_box

    detector = Detector.from_dir(trained_version.directory, device="cpu", configure=configure)
    det = detector.predict([film(0), film(3)])[0]
    assert det.probs.shape == (len(det), detector.num_classes + 1)
    np.testing.assert_allclose(det.probs.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(det.probs[np.arange(len(det)), det.classes], det.scores, atol=1e-6)
    top = int(np.argmax(det.scores))
    assert det.probs[top, :-1].argmax() == det.classes[top]
    if one_class_per_box:  # every row's class is its foreground argmax
        np.testing.assert_array_equal(det.probs[:, :-1].argmax(axis=1), det.classes)


def test_boxes_are_in_original_pixels(detector):
    """A 2x larger film is resized to the model's 128 px and mapped back."""
    import cv2

    big = cv2.resize(film(0), (256, 256), interpolation=cv2.INTER_NEAREST)
    det = detector.predict([big])[0]
    assert det.image_size == (256, 256)
    assert iou(det.boxes[int(np.argmax(det.scores))], TRUTH * 2) > 0.5


def test_batched_predict_equals_one_by_one(detector):
    import cv2

    images = [
        film(0), film(1, lesion=False), cv2.resize(film(0), (192, 160)),
        film(0).astype(np.uint16) * 257, np.dstack([film(2)] * 3),
    ]
    batched = detector.predict(images)
    single = [detector.predict([im])[0] for im in images]
    assert len(batched) == len(images)
    for b, s in zip(batched, single, strict=True):
        assert b.image_size == s.image_size and len(b) == len(s)
        np.testing.assert_allclose(b.boxes, s.boxes, atol=1e-2)
        np.testing.assert_allclose(b.probs, s.probs, atol=1e-4)
        np.testing.assert_array_equal(b.classes, s.classes)


def test_amp_leaves_the_cpu_path_exactly_as_it_was(detector, trained_version):
    """AMP is a GPU setting (CXR_PRELABEL_AMP on by default): on the CPU a detector asked
    for it runs no autocast and gives the very same numbers as one that was not."""
    images = [film(0), film(1, lesion=False)]
    amp = Detector.from_dir(trained_version.directory, device="cpu", amp=True)
    assert amp.amp is False and detector.amp is False
    for a, b in zip(amp.predict(images), detector.predict(images), strict=True):
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.probs, b.probs)
        assert a.probs.dtype == np.float64


def test_tampered_checkpoint_is_refused(trained_version, tmp_path):
    copy = tmp_path / "version"
    shutil.copytree(trained_version.directory, copy)
    data = bytearray((copy / CHECKPOINT_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / CHECKPOINT_FILE).write_bytes(bytes(data))
    with pytest.raises(DomainError) as err:
        Detector.from_dir(copy, device="cpu")
    assert err.value.code == "model_checksum_mismatch"
    with pytest.raises(DomainError) as err:  # the registry's digest catches it too
        Detector.from_dir(copy, expected_sha256=trained_version.sha256, device="cpu")
    assert err.value.code == "model_checksum_mismatch"


def test_unverified_checkpoint_path_is_not_accepted(trained_version):
    """The constructor takes verified bytes only: a path would skip the checksum."""
    from training.config import build_config

    with pytest.raises(TypeError):
        Detector(build_config(2, preset="tiny"), trained_version.checkpoint)


def test_expected_checksum_argument_is_enforced(trained_version, tmp_path):
    with pytest.raises(DomainError) as err:
        Detector.from_dir(trained_version.directory, expected_sha256="0" * 64, device="cpu")
    assert err.value.code == "model_checksum_mismatch"
    copy = tmp_path / "version"
    shutil.copytree(trained_version.directory, copy)
    (copy / MANIFEST_FILE).unlink()
    with pytest.raises(DomainError) as err:
        Detector.from_dir(copy, device="cpu")
    assert err.value.code == "model_checksum_missing"
    det = Detector.from_dir(copy, expected_sha256=trained_version.sha256, device="cpu")
    assert det.class_names == ["Nodule/Mass", "Pleural effusion"]
