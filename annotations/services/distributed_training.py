"""A detector training run over several processes (``training.distributed``).

The run's worker task starts the training processes and stays with them: it follows
rank 0's progress file, beats the run's heartbeat with it (so a cancelled or lost run
stops them), stores each intermediate checkpoint as the run's ``runs/<id>/last``, and
hands the finished model's folder back to the caller, which evaluates, registers and
promotes it exactly as after a one-process training.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

from django.conf import settings

from annotations.errors import DomainError
from annotations.models import TrainingRun
from annotations.services import runs, storage

#: How often the task reads the progress file (and beats, at most).
POLL_SECONDS = 1.0


def spec_key(run_id: int) -> str:
    """Where a run's training spec (config and COCO) is stored for joining machines."""
    return f"runs/{run_id}/spec"


def join_key(run_id: int, nonce: str) -> str:
    """The run's join key (hex): what its processes prove to each other they hold.
    Per run and per start (``nonce``, on the run's row), so a proof seen on the wire
    of one run opens no other."""
    return hmac.new(settings.TRAIN_JOIN_SECRET.encode(),
                    f"cxr-train-join\x00{run_id}\x00{nonce}".encode(),
                    hashlib.sha256).hexdigest()


def train_detector_distributed(run: TrainingRun, cfg: Any, state: dict[str, Any], *,
                               dataset: str, coco: Path, image_root: Path,
                               work: Path) -> tuple[Path, str]:
    """Train ``cfg`` in the run's processes on this machine (rank 0), with the other
    machines that join (``train_join``); returns the folder of the finished model and
    its digest.  Progress, the loss curve and the latest checkpoint go into ``state``
    (the run's progress row) as in one process."""
    from training import distributed

    params = run.params
    machines = int(params.get("machines") or 1)
    url = "auto"
    if machines > 1:
        url = settings.TRAIN_DIST_URL
        if not url:
            raise DomainError("invalid_params", "training on several machines needs "
                              "CXR_TRAIN_DIST_URL on the gpu worker (tcp://host:port that "
                              "every machine reaches)")
        state["spec_sha256"] = _publish_spec(run, cfg, coco)
    state["join_nonce"] = secrets.token_hex(16)  # not a secret: the joiners read it
    spec = _spec(cfg, dataset=dataset, coco=coco, image_root=image_root, work=work,
                 checkpoint_period=int(params["checkpoint_period"]),
                 key=join_key(run.pk, state["join_nonce"]))
    topology = distributed.Topology(procs_per_machine=int(params.get("processes") or 1),
                                    num_machines=machines, machine_rank=0, dist_url=url)
    state.update(world_size=topology.world_size, backend=topology.backend,
                 machines=machines, phase="training")
    runs.run_heartbeat(run, progress=state)
    context = distributed.start(distributed.train_process, topology, (spec,))
    seen: dict[str, Any] = {"iteration": 0, "checkpoint": None}
    try:
        while True:
            try:
                finished = context.join(timeout=POLL_SECONDS)
            except Exception as exc:  # a process raised or died: the run fails with why
                raise DomainError("training_failed", "a training process failed: "
                                  f"{str(exc).strip().splitlines()[-1][:300]}") from exc
            _follow(run, state, work, seen)
            if finished:
                break
    finally:
        _stop(context)
    report = distributed.read_json(work / distributed.PROGRESS_FILE)
    if "final" not in report:
        raise DomainError("training_failed", "the training processes ended without a model")
    return work / distributed.RESULT_DIR, report["final"]["sha256"]


def _spec(cfg: Any, *, dataset: str, coco: Path, image_root: Path, work: Path,
          checkpoint_period: int, key: str) -> dict[str, Any]:
    return {"work": str(work), "config": cfg.dump(), "dataset": dataset, "coco": str(coco),
            "image_root": str(image_root),
            "progress_period": max(1, cfg.SOLVER.MAX_ITER // 50),
            "publish_period": checkpoint_period, "join_key": key}


def _spec_digest(folder: Path) -> str:
    return hashlib.sha256((folder / "config.yaml").read_bytes() + b"\0"
                          + (folder / "train.json").read_bytes()).hexdigest()


def _publish_spec(run: TrainingRun, cfg: Any, coco: Path) -> str:
    """The config and COCO file every machine trains on, in the models store: a
    joining machine trains on exactly rank 0's data, whatever changed since.  Returns
    their digest, which the run's row carries and a joiner checks (the store is not
    trusted to hand every machine the same files)."""
    key = spec_key(run.pk)
    folder = storage.folder_for_write(storage.MODELS, key)
    (folder / "config.yaml").write_text(cfg.dump())
    shutil.copyfile(coco, folder / "train.json")
    digest = _spec_digest(folder)
    storage.folder_publish(storage.MODELS, key, folder)
    return digest


def train_join(*, run_id: int, machine_rank: int, dist_url: str,
               wait_seconds: float = 600.0) -> None:
    """Join a running detector training from another machine as ``machine_rank``: its
    processes train on the spec rank 0 stored and the films fetched from the media
    store; rank 0 reports, checkpoints and registers.  Returns when training ends."""
    import json

    from training import distributed

    run = TrainingRun.objects.get(pk=run_id)
    machines = int(run.params.get("machines") or 1)
    if not 0 < machine_rank < machines:
        raise DomainError("invalid_argument", f"machine rank must be 1..{machines - 1} for "
                          f"run {run_id} ({machines} machines; rank 0 is the gpu worker's)")
    deadline = time.monotonic() + wait_seconds
    while True:
        run.refresh_from_db()
        if run.status not in (TrainingRun.Status.PENDING, TrainingRun.Status.RUNNING):
            raise DomainError("conflict", f"training run {run_id} is {run.status}")
        expected = (run.progress or {}).get("spec_sha256")
        nonce = (run.progress or {}).get("join_nonce")
        if expected and not nonce:
            raise DomainError("conflict", f"run {run_id} was started by a gpu worker that "
                              "gives no join key: upgrade it, then start the run again")
        try:
            folder = storage.model_dir(spec_key(run_id)) if expected else None
            if nonce and folder is not None and (folder / "train.json").is_file():
                if _spec_digest(folder) != expected:
                    raise DomainError("integrity", f"the stored spec of run {run_id} does "
                                      "not match the digest on its row")
                break
        except DomainError as exc:
            if exc.code == "integrity":
                raise
        if time.monotonic() > deadline:
            raise DomainError("timeout", f"run {run_id} published no spec in {wait_seconds} s")
        time.sleep(1.0)
    work = storage.training_dir(f"train-{run_id}-rank{machine_rank}-")
    try:
        coco = work / "train.json"
        shutil.copyfile(folder / "train.json", coco)
        keys = [i["file_name"] for i in json.loads(coco.read_text())["images"]]
        image_root = storage.media_tree(keys, work / "images")
        from training.artifacts import config_from_yaml

        cfg = config_from_yaml((folder / "config.yaml").read_text())
        spec = _spec(cfg, dataset=cfg.DATASETS.TRAIN[0], coco=coco, image_root=image_root,
                     work=work, checkpoint_period=int(run.params["checkpoint_period"]),
                     key=join_key(run_id, nonce))
        topology = distributed.Topology(procs_per_machine=int(run.params.get("processes") or 1),
                                        num_machines=machines, machine_rank=machine_rank,
                                        dist_url=dist_url)
        context = distributed.start(distributed.train_process, topology, (spec,))
        try:
            checked = time.monotonic()
            while not context.join(timeout=POLL_SECONDS):
                if time.monotonic() - checked >= 5 * POLL_SECONDS:  # cancelled, failed?
                    checked = time.monotonic()
                    run.refresh_from_db(fields=["status"])
                    if run.status != TrainingRun.Status.RUNNING:
                        raise DomainError("conflict", f"training run {run_id} is "
                                          f"{run.status}: this machine stops")
        finally:
            _stop(context)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _stop(context: Any, grace: float = 10.0) -> None:
    """End every training process still running: SIGTERM, then SIGKILL after ``grace``
    (a process stuck in a collective ignores the first)."""
    for process in context.processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + grace
    for process in context.processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join(5)


def _follow(run: TrainingRun, state: dict[str, Any], work: Path, seen: dict[str, Any]) -> None:
    """Fold rank 0's latest report into the run: progress, loss curve, checkpoint,
    heartbeat (which raises when the run was cancelled or lost)."""
    from training import distributed

    report = distributed.read_json(work / distributed.PROGRESS_FILE)
    # what the processes themselves saw: their group's size and backend
    state.update({k: report[k] for k in ("world_size", "backend") if k in report})
    iteration = int(report.get("iteration") or 0)
    if iteration > seen["iteration"]:
        seen["iteration"] = iteration
        losses = {k: float(v) for k, v in (report.get("losses") or {}).items()}
        state.update(iteration=iteration, max_iter=report["max_iter"],
                     fraction=iteration / report["max_iter"],
                     eta_seconds=report.get("eta_seconds"), losses=losses)
        state.setdefault("loss_history", []).append([iteration, float(sum(losses.values()))])
    checkpoint = report.get("checkpoint")
    if checkpoint and checkpoint["iteration"] != seen["checkpoint"]:
        seen["checkpoint"] = checkpoint["iteration"]
        key = f"runs/{run.pk}/last"
        folder = storage.folder_for_write(storage.MODELS, key)
        shutil.copytree(work / checkpoint["folder"], folder, dirs_exist_ok=True)
        storage.folder_publish(storage.MODELS, key, folder)
        shutil.rmtree(work / checkpoint["folder"], ignore_errors=True)
        state["checkpoint"] = {"iteration": checkpoint["iteration"], "path": key,
                               "sha256": checkpoint["sha256"]}
    now = time.monotonic()
    if now - seen.get("beat", 0.0) >= min(POLL_SECONDS * 5, settings.RUN_HEARTBEAT_SECONDS):
        seen["beat"] = now
        runs.run_heartbeat(run, progress=state, best_effort=True)
