"""The one parameter schema (annotations.params) and the one error list (Problems)."""

from __future__ import annotations

import pytest

from annotations.consensus import build as build_consensus
from annotations.errors import DomainError, Problems
from annotations.params import Boolean, Choice, Number, Schema
from training.active_learning import build as build_al
from training.params import TRAINING_PARAMS

SCHEMA = Schema("demo", {
    "ratio": Number(0.5, lo=0.0, hi=1.0),
    "steps": Number(10, lo=1, hi=100, integer=True),
    "lr": Number(None, lo=0.0, hi=1.0, nullable=True),
    "mode": Choice("a", ("a", "b")),
    "flag": Boolean(False),
})


def _refusal(call) -> DomainError:
    with pytest.raises(DomainError) as err:
        call()
    assert err.value.code == "invalid_params" and err.value.status == 400
    return err.value


def test_defaults_fill_missing_params_and_values_are_typed():
    assert SCHEMA.validate(None) == {"ratio": 0.5, "steps": 10, "lr": None, "mode": "a",
                                     "flag": False}
    out = SCHEMA.validate({"ratio": 1, "steps": 3.0, "lr": 0.01})
    assert out["ratio"] == 1.0 and type(out["steps"]) is int and out["lr"] == 0.01


@pytest.mark.parametrize("params, param", [
    ({"ratio": 1.5}, "ratio"), ({"ratio": True}, "ratio"), ({"ratio": "0.5"}, "ratio"),
    ({"ratio": float("nan")}, "ratio"), ({"steps": 2.5}, "steps"), ({"steps": 0}, "steps"),
    ({"mode": "c"}, "mode"), ({"flag": 1}, "flag"),
])
def test_wrong_type_or_out_of_range_names_the_param(params, param):
    err = _refusal(lambda: SCHEMA.validate(params))
    assert err.detail["param"] == param and err.message.startswith(f"demo: {param}: ")


def test_unknown_keys_are_refused_in_one_message_listing_the_allowed_ones():
    err = _refusal(lambda: SCHEMA.validate({"ratoi": 0.5, "zzz": 1}))
    assert err.detail["unknown"] == ["ratoi", "zzz"]
    assert err.detail["allowed"] == ["flag", "lr", "mode", "ratio", "steps"]
    assert "ratoi" in err.message and "allowed" in err.message and "ratio" in err.message


def test_every_bad_param_of_a_dict_is_reported_at_once():
    err = _refusal(lambda: SCHEMA.validate({"ratio": 2, "mode": "z"}))
    assert [p["param"] for p in err.detail["problems"]] == ["ratio", "mode"]


def test_params_that_are_not_an_object_are_refused():
    _refusal(lambda: SCHEMA.validate([1, 2]))


@pytest.mark.parametrize("owner, call", [
    ("wbf", lambda: build_consensus("wbf", {"iou_thrr": 0.4})),
    ("hybrid", lambda: build_al("hybrid", {"pool_factr": 2})),
    ("training", lambda: TRAINING_PARAMS.validate({"max_iters": 10})),
])
def test_unknown_params_read_the_same_for_consensus_al_and_training(owner, call):
    err = _refusal(call)
    assert set(err.detail) >= {"strategy", "param", "error", "problems", "unknown", "allowed"}
    assert err.detail["strategy"] == owner and err.message.startswith(f"{owner}: ")
    assert "allowed:" in err.message


@pytest.mark.parametrize("owner, call, param", [
    ("majority", lambda: build_consensus("majority", {"quorum": 2}), "quorum"),
    ("hybrid", lambda: build_al("hybrid", {"pool_factor": 0.5}), "pool_factor"),
    ("training", lambda: TRAINING_PARAMS.validate({"max_iter": 0}), "max_iter"),
])
def test_out_of_range_params_read_the_same_for_consensus_al_and_training(owner, call, param):
    err = _refusal(call)
    assert err.detail["strategy"] == owner and err.detail["param"] == param
    assert err.message == f"{owner}: {param}: {err.detail['error']}"


def test_training_params_accept_what_the_platform_and_benchmarks_send():
    sent = {"preset": "tiny", "max_iter": 60, "ims_per_batch": 2, "base_lr": 0.02,
            "val_fraction": 0.0, "checkpoint_period": 30}
    # what is not sent takes its default: hard labels, a fresh seed, one process
    assert TRAINING_PARAMS.validate(sent) == {**sent, "soft_labels": False, "seed": None,
                                              "task": "detector", "processes": 1,
                                              "machines": 1}
    assert TRAINING_PARAMS.validate({**sent, "soft_labels": True, "seed": 3})["seed"] == 3
    assert TRAINING_PARAMS.validate(None) == TRAINING_PARAMS.defaults


def test_problems_keep_a_bounded_list_but_count_everything():
    problems = Problems(limit=2)
    for i in range(5):
        problems.add(f"bad {i}", line=i + 2)
    assert problems.total == 5 and len(problems.kept) == 2
    assert problems.items == [{"line": 2, "error": "bad 0"}, {"line": 3, "error": "bad 1"}]
    assert problems.summary(limit=1) == "line 2: bad 0 (and 4 more)"


def test_problems_raise_one_short_domain_error_with_the_problems_in_detail():
    problems = Problems()
    problems.raise_if_any("invalid_csv", "row(s)")  # nothing added: no error
    problems.add("expected 8 fields", line=3)
    with pytest.raises(DomainError) as err:
        problems.raise_if_any("invalid_csv", "row(s)")
    assert err.value.message == "1 malformed row(s); nothing was imported"
    assert err.value.as_dict()["detail"] == [{"line": 3, "error": "expected 8 fields"}]


@pytest.mark.django_db
@pytest.mark.parametrize("params", [{"max_iter": 0}, {"preset": "r101"}, {"max_iters": 10}])
def test_a_training_with_bad_params_is_refused_before_any_run_exists(project, params):
    from annotations.models import TrainingRun
    from annotations.services.training import training_run_create

    with pytest.raises(DomainError) as err:
        training_run_create(project=project, params=params, enqueue=False)
    assert err.value.code == "invalid_params" and err.value.status == 400
    assert not TrainingRun.objects.exists()
