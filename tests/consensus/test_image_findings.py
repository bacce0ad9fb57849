"""Image-level findings across readers: majority with quorum, the reader model, and
how findings, boxes and "No finding" fit together (pure engine, no database)."""

from __future__ import annotations

import numpy as np
import pytest

from annotations.consensus import build
from annotations.consensus.image_agreement import image_label_kappa, image_label_vs_consensus
from annotations.consensus.types import ImageReads, ReaderRead
from annotations.errors import DomainError
from annotations.taxonomy import NO_FINDING

NF = frozenset({NO_FINDING})


def read(reader: str, *labels: str, boxes=()) -> ReaderRead:
    return ReaderRead(reader, np.array([b[1:] for b in boxes], dtype=float).reshape(-1, 4),
                      np.array([b[0] for b in boxes], dtype=int), frozenset(labels))


def image(image_id: str, *reads: ReaderRead) -> ImageReads:
    return ImageReads(image_id, 100.0, 100.0, list(reads))


def test_majority_needs_the_quorum_and_says_no_finding_otherwise():
    images = [
        image("a", read("R1", "Effusion"), read("R2", "Effusion", "Edema"), read("R3", NO_FINDING)),
        image("b", read("R1", "Edema"), read("R2", NO_FINDING), read("R3", NO_FINDING)),
        image("c"),
    ]
    res = build("wbf").run(images)
    assert res["a"].image_labels == {"Effusion"}  # 2 of 3; Edema 1 of 3 is not enough
    assert res["a"].meta["image_votes"] == {"Edema": 1, "Effusion": 2}
    assert res["a"].meta["image_scores"]["Effusion"] == pytest.approx(2 / 3, abs=1e-6)
    assert res["b"].image_labels == NF  # a lone pick does not make a finding
    assert res["c"].image_labels == frozenset()  # unread: undetermined
    lenient = build("wbf", {"image_quorum": 0.3}).run(images)
    assert lenient["a"].image_labels == {"Effusion", "Edema"}
    assert lenient["b"].image_labels == {"Edema"}  # a finding removes "No finding"


def test_findings_and_boxes_together():
    box = (0, 10, 10, 40, 40)
    images = [image("a", read("R1", "Cardiomegaly", boxes=[box]),
                    read("R2", "Cardiomegaly", boxes=[box]))]
    res = build("majority").run(images)["a"]
    assert res.classes.tolist() == [0] and res.image_labels == {"Cardiomegaly"}
    # boxes agreed, no finding agreed: the image is abnormal, and not "No finding"
    only_boxes = build("majority").run([image("a", read("R1", boxes=[box]),
                                              read("R2", boxes=[box]))])["a"]
    assert only_boxes.image_labels == frozenset()


@pytest.mark.parametrize("params", [{"image_method": "vote"}, {"image_quorum": 0},
                                    {"image_quorum": "half"}, {"image_prior_strength": -1}])
def test_bad_image_params_are_refused_by_name(params):
    with pytest.raises(DomainError) as err:
        build("majority", params)
    assert err.value.code == "invalid_params" and next(iter(params)) in err.value.message


SENS = {"R1": 0.92, "R2": 0.8, "R3": 0.65, "R4": 0.85, "R5": 0.95}
SPEC = {"R1": 0.95, "R2": 0.9, "R3": 0.97, "R4": 0.75, "R5": 0.85}
#: readers far apart: two who say "yes" too easily, two who miss a lot
UNEVEN_SENS = {"R1": 0.95, "R2": 0.9, "R3": 0.55, "R4": 0.85, "R5": 0.6}
UNEVEN_SPEC = {"R1": 0.97, "R2": 0.6, "R3": 0.95, "R4": 0.9, "R5": 0.55}


def simulated_panel(seed: int, n_images: int = 600, k: int = 3, sens=None, spec=None):
    """Readers with known sensitivity/specificity for one image-level class, k of 5
    reading each image, prevalence 0.3."""
    rng = np.random.default_rng(seed)
    sens, spec = sens or SENS, spec or SPEC
    codes = sorted(sens)
    truth, images = {}, []
    for i in range(n_images):
        present = bool(rng.random() < 0.3)
        reads = []
        for code in sorted(rng.choice(codes, size=k, replace=False)):
            p = sens[code] if present else 1 - spec[code]
            reads.append(read(str(code), *(["Effusion"] if rng.random() < p else [])))
        images.append(image(f"img{i:04d}", *reads))
        truth[f"img{i:04d}"] = present
    return images, truth, sens, spec


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reader_model_recovers_known_sensitivity_and_specificity(seed):
    # ~900 reads per reader, ~270 of them on positive images: sampling error alone is
    # about 0.025 on a sensitivity, so 0.06 is a tolerance, not a coincidence
    images, truth, sens, spec = simulated_panel(seed=seed, n_images=1500)
    strategy = build("reader_model")
    assert strategy.image_rule.method == "reader_model"  # the strategy's default
    res = strategy.run(images)
    est = strategy.image_readers
    for code in sens:
        e = est[code]["Effusion"]
        assert e["n_images"] >= 200
        assert abs(e["sensitivity"] - sens[code]) < 0.06, (code, e)
        assert abs(e["specificity"] - spec[code]) < 0.06, (code, e)
        assert e["sensitivity_ci"][0] < e["sensitivity"] < e["sensitivity_ci"][1]
    assert set(res) == set(truth)


@pytest.mark.parametrize("seed", [0, 1])
def test_reader_model_beats_majority_when_readers_differ(seed):
    # with this panel even the true parameters barely beat majority; with an uneven one
    # (two readers who over-call, two who miss) weighing readers matters
    images, truth, _, _ = simulated_panel(seed=seed, n_images=1500, sens=UNEVEN_SENS,
                                          spec=UNEVEN_SPEC)

    def errors(results):
        return sum(("Effusion" in results[i].image_labels) != t for i, t in truth.items())
    model = errors(build("reader_model").run(images))
    majority = errors(build("reader_model", {"image_method": "majority"}).run(images))
    assert model < 0.8 * majority, (model, majority)


def test_reader_model_posterior_is_calibrated():
    images, truth, *_ = simulated_panel(seed=5, n_images=1500)
    res = build("reader_model").run(images)
    p = np.array([res[i].meta["image_scores"]["Effusion"] for i in truth])
    y = np.array([truth[i] for i in truth], dtype=float)
    bins = np.minimum((p * 10).astype(int), 9)
    ece = sum(abs(p[bins == b].mean() - y[bins == b].mean()) * (bins == b).mean()
              for b in range(10) if (bins == b).any())
    assert ece < 0.05, ece


def test_reader_model_is_deterministic_whatever_the_order():
    images, *_ = simulated_panel(seed=7, n_images=200)
    a = build("reader_model").run(images)
    b = build("reader_model").run(list(reversed(images)))
    assert all(a[i].image_labels == b[i].image_labels and a[i].meta == b[i].meta for i in a)


def test_reader_with_few_reads_shrinks_to_the_panel():
    images, *_ = simulated_panel(seed=11, n_images=400)
    # a newcomer who picked "Effusion" on their 4 images, whatever the truth
    extra = [image(f"new{i}", read("R9", "Effusion"), *images[i].reads[:2]) for i in range(4)]
    strategy = build("reader_model")
    strategy.run(images + extra)
    e = strategy.image_readers["R9"]["Effusion"]
    assert e["n_images"] == 4
    assert 0.3 < e["specificity"] < 0.95  # not pushed to 0 by four "yes" answers
    assert e["specificity_ci"][1] - e["specificity_ci"][0] > 0.3  # and says it is unsure


def test_image_label_agreement_counts():
    images = [
        image("a", read("R1", "Effusion"), read("R2", "Effusion")),
        image("b", read("R1", "Effusion"), read("R2", NO_FINDING)),
        image("c", read("R1", NO_FINDING), read("R2", NO_FINDING)),
    ]
    kappa = {k.label: k for k in image_label_kappa(images, ["Effusion", NO_FINDING])}
    # 2 of 3 images agree on Effusion; pooled rate 1/2: P=2/3, Pe=1/2, kappa=1/3
    assert kappa["Effusion"].kappa == pytest.approx(1 / 3)
    assert kappa["Effusion"].n_images == 3 and kappa["Effusion"].positive_rate == 0.5
    res = build("majority", {"image_quorum": 1.0}).run(images)
    rows = {(r.reader, r.label): r for r in
            image_label_vs_consensus(images, res, ["Effusion", NO_FINDING])}
    r1 = rows[("R1", "Effusion")]
    assert (r1.tp, r1.fp, r1.fn, r1.tn) == (1, 1, 0, 1)
    assert r1.sensitivity == 1.0 and r1.specificity == 0.5
    r2 = rows[("R2", NO_FINDING)]  # consensus "No finding" on b and c
    assert (r2.tp, r2.fp, r2.fn, r2.tn) == (2, 0, 0, 1) and r2.kappa == 1.0


def test_label_set_agreement_for_routing():
    from annotations.consensus.image_agreement import label_set_agreement

    assert label_set_agreement(image("a", read("R1", "Edema"))) is None
    assert label_set_agreement(image("a", read("R1", NO_FINDING), read("R2"))) == 1.0
    split = image("a", read("R1", "Edema", "Pneumonia"), read("R2", "Edema"), read("R3"))
    # pairs: {E,P}/{E} 1/2, {E,P}/{} 0, {E}/{} 0
    assert label_set_agreement(split) == pytest.approx(1 / 6)
