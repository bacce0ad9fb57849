"""A detector training run in two CPU processes (torch.distributed, gloo), next to the
same run in one: the checkpoint, the registry entry and the gold evaluation are of the
same kind, the run records its world size, and the two-process model serves."""

from __future__ import annotations

import pytest
import yaml

from annotations.errors import DomainError
from annotations.models import ModelVersion, TrainingRun
from annotations.services import storage
from annotations.services.training import training_run_create, training_run_execute
from tests import test_training_loop

pytestmark = [pytest.mark.slow, pytest.mark.django_db]

labelled = test_training_loop.labelled

PARAMS = {"preset": "tiny", "max_iter": 12, "ims_per_batch": 2, "base_lr": 0.02,
          "val_fraction": 0.0, "checkpoint_period": 6, "seed": 3}


def _config(version: ModelVersion) -> dict:
    """The saved config less what names the run (its dataset and work folder)."""
    cfg = yaml.safe_load(version.config)
    cfg.pop("OUTPUT_DIR")
    cfg.pop("DATASETS")
    return cfg


def _run(project, **extra) -> TrainingRun:
    run = training_run_create(project=project, enqueue=False, params={**PARAMS, **extra})
    return training_run_execute(run_id=run.pk)


def test_two_cpu_processes_train_a_version_like_one_process(labelled):
    import torch

    torch.set_num_threads(1)
    project, pool = labelled
    one = _run(project)
    two = _run(project, processes=2)
    for run, world in ((one, 1), (two, 2)):
        assert run.status == TrainingRun.Status.DONE, run.reason
        assert run.progress["world_size"] == world
        assert run.progress["iteration"] == PARAMS["max_iter"]
        assert run.progress["checkpoint"] == {**run.progress["checkpoint"],
                                              "iteration": 6, "path": f"runs/{run.pk}/last"}
        assert len(run.progress["loss_history"]) >= 2
    assert two.progress["backend"] == "gloo"
    v1, v2 = (ModelVersion.objects.get(training_run=r) for r in (one, two))
    # the same files, the same config, the same gold evaluation (numbers of its own)
    files = {v.name: sorted(p.name for p in storage.model_dir(v.name).iterdir()
                            if not p.name.startswith(".")) for v in (v1, v2)}
    assert files[v1.name] == files[v2.name]
    assert _config(v1) == _config(v2) and v1.sha256 != v2.sha256
    assert _config(v1)["SOLVER"]["AMP"]["ENABLED"] is False  # CXR_TRAIN_AMP: GPU only
    assert set(v1.metrics) == set(v2.metrics) and v2.metrics["gold_images"] == 3
    assert v1.train_images == v2.train_images
    ckpt = storage.model_dir(f"runs/{two.pk}/last")
    assert sorted(p.name for p in ckpt.iterdir() if not p.name.startswith(".")) == \
        files[v2.name]
    # the two-process model loads verified and detects
    from training.detector import Detector

    detector = Detector.from_dir(storage.model_dir(v2.name), expected_sha256=v2.sha256)
    assert len(detector.predict([storage.read_display(pool[0])])) == 1


def test_world_size_is_checked_when_the_run_is_created(labelled):
    project, _ = labelled
    for params, field in (({"processes": 2, "ims_per_batch": 3}, "ims_per_batch"),
                          ({"machines": 2, "task": "classifier"}, "processes"),
                          ({"processes": 0}, "processes")):
        with pytest.raises(DomainError) as refused:
            training_run_create(project=project, enqueue=False, params={**PARAMS, **params})
        assert refused.value.code == "invalid_params" and field in refused.value.message


@pytest.mark.django_db(transaction=True)
def test_a_second_machine_joins_over_tcp_and_the_run_trains_on_both(labelled, settings,
                                                                    tmp_path):
    """Two "machines" on this host, one process each: the gpu worker's run is rank 0, a
    separate ``manage.py train_join`` process (its own interpreter, database session and
    data) is rank 1; they rendezvous over TCP and train one model."""
    import subprocess
    import sys

    from annotations.label_studio.server import free_port
    from tests.worker import worker_env

    project, _ = labelled
    settings.TRAIN_DIST_URL = f"tcp://127.0.0.1:{free_port()}"
    run = training_run_create(project=project, enqueue=False,
                              params={**PARAMS, "machines": 2})
    env = worker_env(settings, tmp_path / "machine-1")
    log = tmp_path / "join.log"
    with open(log, "w") as out:
        joiner = subprocess.Popen(  # noqa: S603 - this repository's own command
            [sys.executable, "manage.py", "train_join", str(run.pk), "--machine-rank", "1",
             "--dist-url", settings.TRAIN_DIST_URL, "--wait", "120"],
            env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            run = training_run_execute(run_id=run.pk)
            joined = joiner.wait(120)
        finally:
            if joiner.poll() is None:
                joiner.kill()
    assert run.status == TrainingRun.Status.DONE, (run.reason, log.read_text()[-3000:])
    assert joined == 0, log.read_text()[-3000:]
    assert "machine 1 done" in log.read_text()
    assert (run.progress["world_size"], run.progress["machines"]) == (2, 2)
    version = ModelVersion.objects.get(training_run=run)
    assert version.metrics["gold_images"] == 3


def test_joining_a_one_machine_run_is_refused(labelled):
    project, _ = labelled
    run = training_run_create(project=project, enqueue=False, params=PARAMS)
    from annotations.services.distributed_training import train_join

    with pytest.raises(DomainError) as refused:
        train_join(run_id=run.pk, machine_rank=1, dist_url="tcp://127.0.0.1:1")
    assert refused.value.code == "invalid_argument"


def test_a_joiner_refuses_a_spec_that_is_not_the_one_on_the_runs_row(labelled, settings):
    """Whoever can write the models store cannot hand a joining machine other data: the
    spec it would train on is checked against the digest rank 0 put on the run's row."""
    from pathlib import Path

    from annotations.services.distributed_training import spec_key, train_join

    project, _ = labelled
    run = training_run_create(project=project, enqueue=False,
                              params={**PARAMS, "machines": 2})
    folder = Path(settings.MODEL_DIR) / spec_key(run.pk)
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("MODEL: {}\n")
    (folder / "train.json").write_text('{"images": [], "annotations": []}')
    TrainingRun.objects.filter(pk=run.pk).update(progress={"spec_sha256": "0" * 64,
                                                           "join_nonce": "1" * 32})
    with pytest.raises(DomainError) as refused:
        train_join(run_id=run.pk, machine_rank=1, dist_url="tcp://127.0.0.1:1",
                   wait_seconds=10)
    assert refused.value.code == "integrity"


#: A process that reached the rendezvous port without the run's join key: it takes rank 1
#: and does what rank 1's ``_cpu_worker`` does (the per-machine groups, the barrier), then
#: guesses a proof.
IMPOSTOR = """
import datetime, sys
import torch, torch.distributed as dist
dist.init_process_group("gloo", init_method=sys.argv[1], world_size=2, rank=1,
                        timeout=datetime.timedelta(seconds=300))
dist.new_group([0])
dist.new_group([1])
dist.barrier()
proofs = [torch.zeros(32, dtype=torch.uint8) for _ in range(2)]
dist.all_gather(proofs, torch.full((32,), 7, dtype=torch.uint8))
print("guessed", flush=True)
"""


@pytest.mark.django_db(transaction=True)
def test_an_impostor_that_takes_a_rank_at_the_rendezvous_trains_nothing(
        labelled, settings, tmp_path):
    """Whoever reaches CXR_TRAIN_DIST_URL first takes a rank; without the run's join key
    it cannot prove it: rank 0 refuses the group in its first collective and trains and
    registers nothing."""
    import subprocess
    import sys

    from annotations.label_studio.server import free_port

    project, _ = labelled
    settings.TRAIN_DIST_URL = f"tcp://127.0.0.1:{free_port()}"
    run = training_run_create(project=project, enqueue=False,
                              params={**PARAMS, "machines": 2})
    log = tmp_path / "impostor.log"
    with open(log, "w") as out:
        impostor = subprocess.Popen(  # noqa: S603 - the test's own script
            [sys.executable, "-c", IMPOSTOR, settings.TRAIN_DIST_URL],
            stdout=out, stderr=subprocess.STDOUT)
        try:
            run = training_run_execute(run_id=run.pk)
        finally:
            try:  # it ends by itself once its guess is sent
                impostor.wait(60)
            except subprocess.TimeoutExpired:
                impostor.kill()
                impostor.wait(10)
    assert "guessed" in log.read_text(), log.read_text()[-2000:]
    assert run.status == TrainingRun.Status.FAILED
    assert "rank(s) [1] did not prove they belong to this training run" in run.reason
    assert not ModelVersion.objects.filter(training_run=run).exists()
    assert "iteration" not in run.progress
    assert "join_key" not in str(run.progress) and run.progress["join_nonce"]


def test_a_joiner_refuses_a_run_whose_rank_0_gives_no_join_key(labelled):
    from annotations.services.distributed_training import train_join

    project, _ = labelled
    run = training_run_create(project=project, enqueue=False,
                              params={**PARAMS, "machines": 2})
    TrainingRun.objects.filter(pk=run.pk).update(progress={"spec_sha256": "0" * 64})
    with pytest.raises(DomainError) as refused:
        train_join(run_id=run.pk, machine_rank=1, dist_url="tcp://127.0.0.1:1",
                   wait_seconds=10)
    assert refused.value.code == "conflict" and "no join key" in refused.value.message


def test_a_peers_proof_is_bound_to_its_key_and_its_rank():
    from training.distributed import peer_proof

    assert peer_proof(b"k" * 32, 1) == peer_proof(b"k" * 32, 1)
    assert peer_proof(b"k" * 32, 1) != peer_proof(b"k" * 32, 0)
    assert peer_proof(b"k" * 32, 1) != peer_proof(b"j" * 32, 1)


class _Exploit:
    """A pickle that creates a file when it is loaded (what an attacker would send)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_what_a_peer_sends_cannot_run_code_in_a_hardened_process(tmp_path):
    """Detectron2's gathers unpickle what peers send; after ``harden_collectives`` a
    pickle that would call something is refused, and the plain data training gathers
    (metrics, seeds, flags) still comes through."""
    import pickle
    from collections import OrderedDict

    from detectron2.utils import comm
    from torch.distributed import distributed_c10d

    from training import distributed

    marker = tmp_path / "ran"
    exploit = pickle.dumps(_Exploit(str(marker)))
    saved = comm.pickle, distributed_c10d._unpickler
    try:
        distributed.harden_collectives()
        with pytest.raises(pickle.UnpicklingError, match="open: refused"):
            comm.pickle.loads(exploit)
        import io

        with pytest.raises(pickle.UnpicklingError):
            distributed_c10d._unpickler(io.BytesIO(exploit)).load()
        assert not marker.exists()
        plain = {"loss_cls": 0.5, "data_time": 0.01, "seed": 2**31 - 1, "ok": True,
                 "names": ["a", "b"], "pair": (1, 2.0), "set": {1}, "od": OrderedDict(a=1),
                 "raw": b"x", "none": None}
        assert comm.pickle.loads(comm.pickle.dumps(plain)) == plain
    finally:
        comm.pickle, distributed_c10d._unpickler = saved
    pickle.loads(exploit)  # the unhardened module would have run it
    assert marker.exists()
