import random

import numpy as np
import pytest

from annotations.consensus import available, build, get_strategy
from annotations.consensus.image_labels import consensus_image_labels
from annotations.consensus.majority import quorum_count
from annotations.errors import DomainError
from annotations.taxonomy import NO_FINDING
from tests.consensus.helpers import image, read

NF = frozenset({NO_FINDING})


def test_registry_lists_all_strategies_and_rejects_unknown():
    assert {"wbf", "majority", "reader_priority", "reader_weighted", "reader_model"} <= set(
        available())
    with pytest.raises(DomainError) as err:
        get_strategy("nope")
    assert err.value.code == "unknown_strategy"


def test_majority_two_agree_one_disagrees():
    im = image(
        "a",
        read("R1", (0, 10, 10, 50, 50)),
        read("R2", (0, 12, 10, 52, 50)),
        read("R3", (0, 70, 70, 90, 90)),  # alone elsewhere
    )
    res = build("majority").run([im])["a"]
    np.testing.assert_allclose(res.boxes, [[11, 10, 51, 50]])
    assert res.scores.tolist() == pytest.approx([2 / 3])
    assert res.support == [("R1", "R2")]
    assert res.image_labels == frozenset()


def test_majority_one_box_per_reader_per_cluster():
    # R1 drew two overlapping boxes; only one may join R2's cluster
    im = image(
        "a",
        read("R1", (0, 10, 10, 50, 50), (0, 11, 10, 51, 50)),
        read("R2", (0, 10, 10, 50, 50)),
    )
    res = build("majority", {"quorum": 1.0}).run([im])["a"]
    assert res.support == [("R1", "R2")]
    np.testing.assert_allclose(res.boxes, [[10, 10, 50, 50]])  # the identical pair wins


@pytest.mark.parametrize(
    ("quorum", "k", "need"), [(0.5, 2, 1), (0.5, 3, 2), (2 / 3, 3, 2), (1.0, 3, 3), (0.01, 5, 1)]
)
def test_quorum_count(quorum, k, need):
    assert quorum_count(quorum, np.array([k]))[0] == need


def test_majority_quorum_edges():
    im = image("a", read("R1", (0, 10, 10, 50, 50)), read("R2"), read("R3"))
    assert len(build("majority", {"quorum": 0.5}).run([im])["a"].classes) == 0  # needs 2
    assert len(build("majority", {"quorum": 0.33}).run([im])["a"].classes) == 1  # ceil(.99)=1
    two = image("b", read("R1", (0, 10, 10, 50, 50)), read("R2"))
    assert len(build("majority", {"quorum": 0.5}).run([two])["b"].classes) == 1  # ceil(1)=1
    assert len(build("majority", {"quorum": 0.5, "min_support": 2}).run([two])["b"].classes) == 0


def test_no_finding_rule():
    assert consensus_image_labels(0, 3) == NF
    assert consensus_image_labels(1, 3) == frozenset()
    assert consensus_image_labels(0, 0) == frozenset()
    # a lone box rejected by the quorum: the image is No finding
    lone = image("a", read("R1", (0, 10, 10, 50, 50)), read("R2"), read("R3"))
    res = build("majority").run([lone])["a"]
    assert res.image_labels == NF and res.meta["no_finding_votes"] == 2
    # a surviving box removes No finding even though one reader voted for it
    kept = image("b", read("R1", (0, 10, 10, 50, 50)), read("R2", (0, 10, 10, 50, 50)), read("R3"))
    assert build("majority").run([kept])["b"].image_labels == frozenset()
    # nobody read the image: undetermined
    assert build("majority").run([image("c")])["c"].image_labels == frozenset()


def test_majority_per_class_thresholds():
    # IoU 0.6 between the two readers' boxes
    im = image(
        "a",
        read("R1", (0, 0, 0, 80, 50), (1, 0, 0, 80, 50)),
        read("R2", (0, 0, 0, 48, 50), (1, 0, 0, 48, 50)),
    )
    res = build("majority", {"quorum": 1.0, "iou_thr": {"0": 0.5, "1": 0.7}}).run([im])["a"]
    assert res.classes.tolist() == [0]


def test_reader_priority_order_and_fallback():
    images = [
        image("a", read("R8", (0, 1, 1, 9, 9)), read("R9", (1, 2, 2, 8, 8))),
        image("b", read("R8", (0, 1, 1, 9, 9)), read("R10")),
        image("c", read("R1", (2, 1, 1, 9, 9)), read("R2", (2, 1, 1, 9, 9))),
    ]
    params = {
        "readers": ["R9", "R10", "R8"],
        "fallback": {"strategy": "majority", "params": {"quorum": 1.0}},
    }
    res = build("reader_priority", params).run(images)
    assert res["a"].classes.tolist() == [1] and res["a"].meta["decided_by"] == "R9"
    assert res["b"].image_labels == NF and res["b"].meta["decided_by"] == "R10"
    assert res["c"].classes.tolist() == [2] and res["c"].meta["decided_by"] == "fallback:majority"
    assert res["c"].support == [("R1", "R2")]
    plain = build("reader_priority", {"readers": ["R9"]}).run(images)
    assert plain["c"].meta["undecided"] and plain["c"].image_labels == frozenset()


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"readers": []},
        {"readers": ["R1", "R1"]},
        {"readers": ["R1"], "fallback": {"strategy": "x"}},
        {"readers": ["R1"], "other": 1},
    ],
)
def test_reader_priority_invalid_params(params):
    with pytest.raises(DomainError) as err:
        build("reader_priority", params)
    assert err.value.code == "invalid_params"


@pytest.mark.parametrize(
    ("name", "params"),
    [("majority", {"quorum": 0}), ("majority", {"iou_thr": {"x": 0.5}}),
     ("reader_weighted", {"threshold": 2}), ("majority", {"default_iou_thr": 0.5}),
     ("reader_model", {"decision": "best"}), ("reader_model", {"prior_fp": 0}),
     ("reader_model", {"strength": 3})],
)
def test_invalid_params(name, params):
    with pytest.raises(DomainError) as err:
        build(name, params)
    assert err.value.code == "invalid_params"


def _shuffled(images, seed):
    rng = random.Random(seed)
    out = []
    for im in images:
        reads = list(im.reads)
        rng.shuffle(reads)
        out.append(type(im)(im.image_id, im.width, im.height, reads))
    rng.shuffle(out)
    return out


@pytest.mark.parametrize(
    ("name", "params"),
    [("wbf", {}), ("wbf", {"conf_type": "box_and_model_avg", "weights": {"R9": 2}}),
     ("majority", {}), ("reader_weighted", {}), ("reader_model", {}),
     ("reader_priority", {"readers": ["R9", "R10"], "fallback": {"strategy": "wbf"}})],
)
def test_determinism_under_shuffling(vinbigdata_images, name, params):
    images = vinbigdata_images[:600]
    a = build(name, params).run(images)
    b = build(name, params).run(_shuffled(images, 7))
    assert list(a) == sorted(a) and set(a) == set(b)
    assert all(a[k].same_as(b[k]) for k in a)
