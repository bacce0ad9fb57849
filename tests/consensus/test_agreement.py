import json

import numpy as np
import pytest

from annotations.consensus import build
from annotations.consensus.agreement import (
    fleiss_kappa,
    optimal_match_count,
    pairwise_agreement,
    presence_kappa,
    reader_vs_consensus,
    reader_vs_consensus_by_class,
)
from tests.consensus.helpers import image, read

# Fleiss (1971) style textbook table (Wikipedia "Fleiss' kappa" worked example):
# 10 subjects, 14 raters, 5 categories -> P-bar 0.378, P_e 0.213, kappa 0.210
WIKI = np.array([
    [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
])


def test_fleiss_kappa_textbook():
    kappa, p_bar, p_e = fleiss_kappa(WIKI)
    assert p_bar == pytest.approx(0.378, abs=5e-4)
    assert p_e == pytest.approx(0.213, abs=5e-4)
    assert kappa == pytest.approx(0.210, abs=5e-4)


def test_fleiss_kappa_perfect_and_undefined():
    assert fleiss_kappa(np.array([[3, 0], [0, 3]]))[0] == pytest.approx(1.0)
    assert fleiss_kappa(np.array([[3, 0], [3, 0]]))[0] is None  # no variation


def test_optimal_matching_beats_greedy():
    # all candidate IoUs are 2/3 except a1-b1 (0.25): greedy a0-b0 strands a1 and b1,
    # the optimum pairs a0-b1 and a1-b0
    a = np.array([[0, 0, 10, 10], [4, 0, 14, 10.0]])
    b = np.array([[2, 0, 12, 10], [-2, 0, 8, 10.0]])
    assert optimal_match_count(a, b, 0.5) == 2


def test_pairwise_f1_hand_case():
    images = [
        image(
            "a",
            read("R1", (0, 0, 0, 10, 10), (0, 50, 50, 60, 60)),
            read("R2", (0, 0, 0, 10, 10)),
        ),
        image("b", read("R1", (1, 0, 0, 10, 10)), read("R2", (1, 20, 20, 30, 30))),
        image("c", read("R1"), read("R3", (0, 0, 0, 10, 10))),
    ]
    rows = {(p.reader_a, p.reader_b, p.class_id): p for p in pairwise_agreement(images, 0.5)}
    c0 = rows[("R1", "R2", 0)]
    assert (c0.n_a, c0.n_b, c0.tp) == (2, 1, 1)
    assert c0.recall == 0.5 and c0.precision == 1.0 and c0.f1 == pytest.approx(2 / 3)
    total = rows[("R1", "R2", None)]
    assert (total.n_a, total.n_b, total.tp, total.n_images) == (3, 2, 1, 2)
    assert total.f1 == pytest.approx(0.4)
    assert rows[("R1", "R3", None)].f1 == 0.0
    json.dumps([p.to_dict() for p in rows.values()])
    only_b = {(p.reader_a, p.reader_b, p.class_id): p
              for p in pairwise_agreement(images, 0.5, image_ids=["b"])}
    assert only_b[("R1", "R2", None)].n_a == 1


def test_presence_kappa_and_reader_vs_consensus():
    images = [
        image("a", read("R1", (0, 0, 0, 10, 10)), read("R2", (0, 0, 0, 10, 10)), read("R3")),
        image("b", read("R1"), read("R2"), read("R3")),
    ]
    (k0,) = presence_kappa(images)
    # image a: 2 yes 1 no -> P=1/3; image b: P=1; P-bar=2/3; p_yes=2/6 -> P_e=5/9
    assert k0.kappa == pytest.approx((2 / 3 - 5 / 9) / (1 - 5 / 9))
    cons = build("majority").run(images)
    rows = {r.reader: r for r in reader_vs_consensus(images, cons, 0.5)}
    assert rows["R1"].sensitivity == 1.0 and rows["R1"].precision == 1.0
    assert rows["R3"].sensitivity == 0.0 and rows["R3"].precision is None
    json.dumps([r.to_dict() for r in rows.values()] + [k0.to_dict()])


def _one_reader_one_class(images, cons, code, cid):
    """``code``'s reads and the consensus cut down to class ``cid``, on the images where
    that reader drew it or the consensus has it."""
    from dataclasses import replace

    def has(classes):
        return bool((classes == cid).any())

    out_reads, out_cons = [], {}
    for im in images:
        mine = [r for r in im.reads if r.reader == code]
        if not mine or im.image_id not in cons:
            continue
        res = cons[im.image_id]
        if not (has(mine[0].classes) or has(res.classes)):
            continue
        keep = mine[0].classes == cid
        out_reads.append(replace(im, reads=[replace(mine[0], boxes=mine[0].boxes[keep],
                                                    classes=mine[0].classes[keep])]))
        kc = res.classes == cid
        out_cons[im.image_id] = replace(
            res, boxes=res.boxes[kc], classes=res.classes[kc], scores=res.scores[kc],
            support=[s for s, k in zip(res.support, kc, strict=True) if k])
    return out_reads, out_cons


@pytest.mark.parametrize("strategy", ["wbf", "majority"])
def test_per_class_in_one_pass_matches_each_reader_and_class_cut_out_alone(strategy):
    rng = np.random.default_rng(7)
    images = []
    for i in range(60):
        reads = []
        for code in ("R1", "R2", "R3"):
            n = int(rng.integers(0, 4))
            xy = rng.uniform(0, 200, (n, 2))
            boxes = [(int(rng.integers(0, 4)), x, y, x + rng.uniform(20, 60),
                      y + rng.uniform(20, 60)) for x, y in xy]
            reads.append(read(code, *boxes))
        images.append(image(f"i{i:02d}", *reads, size=300.0))
    # ten images without a consensus: not counted; a majority drops lone boxes, so
    # another reader's box alone must not count an image for this reader
    cons = build(strategy).run(images[:50])
    together, by_class = reader_vs_consensus_by_class(images, cons, 0.4)
    assert together == reader_vs_consensus(images, cons, 0.4)
    assert set(by_class) == {0, 1, 2, 3}
    for cid, rows in by_class.items():
        got = {r.reader: r for r in rows}
        for code in ("R1", "R2", "R3"):
            reads, results = _one_reader_one_class(images, cons, code, cid)
            alone = reader_vs_consensus(reads, results, 0.4)
            if not reads:
                assert code not in got
                continue
            assert got[code] == alone[0]
    # and the classes together are the overall figures
    overall = {r.reader: r for r in reader_vs_consensus(images, cons, 0.4)}
    for code, row in overall.items():
        rows = [r for rs in by_class.values() for r in rs if r.reader == code]
        assert row.tp == sum(r.tp for r in rows)
        assert row.n_reader_boxes == sum(r.n_reader_boxes for r in rows)
        assert row.n_consensus_boxes == sum(r.n_consensus_boxes for r in rows)
        assert row.n_images == 50


def test_image_agreement_hand_cases():
    from annotations.consensus import ImageReads, ReaderRead
    from annotations.consensus.agreement import image_agreement

    box = np.array([[10.0, 10, 50, 50]])
    shifted = np.array([[12.0, 10, 52, 50]])
    far = np.array([[200.0, 200, 240, 240]])
    same = ImageReads("a", 300, 300, [ReaderRead("R1", box, [8]), ReaderRead("R2", shifted, [8])])
    assert image_agreement(same) == 1.0
    other_class = ImageReads("b", 300, 300, [ReaderRead("R1", box, [8]),
                                             ReaderRead("R2", shifted, [3])])
    assert image_agreement(other_class) == 0.0
    empty = ImageReads("c", 300, 300, [ReaderRead("R1", np.zeros((0, 4)), [], {"No finding"}),
                                       ReaderRead("R2", np.zeros((0, 4)), [], {"No finding"}),
                                       ReaderRead("R3", far, [8])])
    # pairs: (R1,R2) agree on nothing = 1.0; (R1,R3) and (R2,R3) = 0.0
    assert image_agreement(empty) == pytest.approx(1 / 3)
    assert image_agreement(ImageReads("d", 300, 300, [ReaderRead("R1", box, [8])])) is None
