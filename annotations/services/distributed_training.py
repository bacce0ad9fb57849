"""A detector training run over several processes (``training.distributed``).

The run's worker task starts the training processes and stays with them: it follows
rank 0's progress file, beats the run's heartbeat with it (so a cancelled or lost run
stops them), stores each intermediate checkpoint as the run's ``runs/<id>/last``, and
hands the finished model's folder back to the caller, which evaluates, registers and
promotes it exactly as after a one-process training.
"""

from __future__ import annotations

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


def train_detector_distributed(run: TrainingRun, cfg: Any, state: dict[str, Any], *,
                               dataset: str, coco: Path, image_root: Path, work: Path,
                               world_size: int) -> tuple[Path, str]:
    """Train ``cfg`` in ``world_size`` processes on this machine; returns the folder of
    the finished model (rank 0's) and its digest.  Progress, the loss curve and the
    latest checkpoint go into ``state`` (the run's progress row) as in one process."""
    from training import distributed

    spec = {"work": str(work), "config": cfg.dump(), "dataset": dataset, "coco": str(coco),
            "image_root": str(image_root),
            "progress_period": max(1, cfg.SOLVER.MAX_ITER // 50),
            "publish_period": int(run.params["checkpoint_period"])}
    topology = distributed.Topology(procs_per_machine=world_size)
    state.update(world_size=world_size, backend=topology.backend, phase="training")
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
        for process in context.processes:
            if process.is_alive():
                process.terminate()
        for process in context.processes:
            process.join(10)
    report = distributed.read_json(work / distributed.PROGRESS_FILE)
    if "final" not in report:
        raise DomainError("training_failed", "the training processes ended without a model")
    return work / distributed.RESULT_DIR, report["final"]["sha256"]


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
