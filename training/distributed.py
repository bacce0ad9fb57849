"""Training in several processes (one per GPU, or CPU processes) over torch.distributed.

On GPUs each process is Detectron2's own ``launch`` worker
(``detectron2.engine.launch._distributed_worker``: NCCL, one device per process,
the per-machine process groups ``comm`` uses).  Detectron2 0.6's worker asserts CUDA
and always asks for NCCL, so CPU processes start with ``_cpu_worker`` below, which
does the same steps with gloo and no device.  Everything after the process group is
Detectron2's: ``DefaultTrainer`` wraps the model in ``DistributedDataParallel``, the
training sampler shards by ``comm`` rank, ``SOLVER.IMS_PER_BATCH`` is the total over
all processes.

The processes are started without blocking (``torch.multiprocessing.start_processes``
with ``join=False``) so the caller keeps beating its run's heartbeat, and can stop
them (cancellation), while they train.  They report through files in the work folder
(``progress.json``; rank 0 only), never through the database: a training process
imports nothing of the platform but ``training``.

Several machines: every machine runs the same job with its ``machine_rank`` and one
``dist_url`` (``tcp://<rank 0 host>:<port>``) that all can reach; see docs/training.md.

torch.distributed does not authenticate whoever reaches the rendezvous, and Detectron2's
collectives pickle what they exchange.  So, first thing in every training process:
``harden_collectives`` makes what a peer sends build plain data only (numbers, strings,
containers: the metrics, seeds and flags training gathers), never code; then
``check_peers`` has each process show every other an HMAC of its rank under the run's
join key, in a byte-tensor all-gather, and a group with a process that cannot is refused
before it trains.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import io
import json
import os
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import training.compat  # noqa: F401  (patches libraries before detectron2 loads)

# isort: split
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.utils import comm
from torch.distributed import distributed_c10d

#: How long a process waits for the others to join (the group's collective timeout).
TIMEOUT = dt.timedelta(minutes=30)
PROGRESS_FILE = "progress.json"
RESULT_DIR = "final"
CHECKPOINT_DIR = "checkpoint"


@dataclass(frozen=True)
class Topology:
    """Processes per machine, machines, this machine's rank, the rendezvous URL."""

    procs_per_machine: int = 1
    num_machines: int = 1
    machine_rank: int = 0
    dist_url: str = "auto"

    @property
    def world_size(self) -> int:
        return self.procs_per_machine * self.num_machines

    @property
    def backend(self) -> str:
        return "nccl" if torch.cuda.is_available() else "gloo"


#: Bytes of one process's proof (an HMAC-SHA256).
PROOF_BYTES = 32


class PeerRefused(RuntimeError):
    """A process in the group could not prove that it belongs to the run."""


def peer_proof(key: bytes, rank: int) -> bytes:
    """What the process of ``rank`` shows its peers: an HMAC of its rank under the
    run's join key (bound to the rank, so no process can pass for another)."""
    return hmac.new(key, f"cxr-train-peer\x00{rank}".encode(), hashlib.sha256).digest()


class _PeerUnpickler(pickle.Unpickler):
    """Unpickles what a training peer sent into plain data only.  Pickle's own opcodes
    build numbers, strings, bytes, lists, tuples and dicts; the only globals allowed are
    a few harmless containers, so a pickle that would call anything (``os.system``, a
    class's ``__reduce__``) is refused.  Our own class, because Detectron2's ``comm``
    calls ``pickle.loads`` directly and torch's restricted unpickler is private."""

    ALLOWED = frozenset({("builtins", "set"), ("builtins", "frozenset"),
                         ("collections", "OrderedDict")})

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"a training peer sent {module}.{name}: refused "
                                     "(peers exchange plain data only)")


class _PeerPickle:
    """Stands in for the ``pickle`` module inside Detectron2's ``comm``."""

    dumps = staticmethod(pickle.dumps)

    @staticmethod
    def loads(data: bytes) -> Any:
        return _PeerUnpickler(io.BytesIO(data)).load()


def harden_collectives() -> None:
    """What peers send builds plain data, never code: in Detectron2's ``comm``
    (``all_gather``/``gather``, whatever group) and torch's ``*_object`` collectives."""
    comm.pickle = _PeerPickle  # type: ignore[attr-defined]
    distributed_c10d._unpickler = _PeerUnpickler


def check_peers(key: bytes) -> None:
    """Every process proves to every other that it holds the run's join key, or the
    group trains nothing.  A byte-tensor all-gather: the first collective of a
    training process, and one that carries no pickle (what a peer sends is compared,
    never deserialised)."""
    rank, world = dist.get_rank(), dist.get_world_size()
    device = (torch.device("cuda", torch.cuda.current_device())
              if dist.get_backend() == dist.Backend.NCCL else torch.device("cpu"))
    mine = torch.tensor(list(peer_proof(key, rank)), dtype=torch.uint8, device=device)
    proofs = [torch.zeros(PROOF_BYTES, dtype=torch.uint8, device=device)
              for _ in range(world)]
    dist.all_gather(proofs, mine)
    refused = [r for r, proof in enumerate(proofs)
               if not hmac.compare_digest(bytes(proof.cpu().tolist()), peer_proof(key, r))]
    if refused:
        raise PeerRefused(
            f"rank(s) {refused} did not prove they belong to this training run (a process "
            "that is not the run's reached the rendezvous, or a machine has another "
            "CXR_TRAIN_JOIN_SECRET): nothing was trained")


def _free_url() -> str:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{sock.getsockname()[1]}"


def _ddp_on_cpu() -> None:
    """Detectron2 0.6's ``create_ddp_model`` always passes ``device_ids`` (a GPU's), and
    DistributedDataParallel refuses device ids for a CPU module: in a CPU process the
    trainer's wrapper passes none.  Applied only inside CPU training processes."""
    from detectron2.engine import defaults

    original = defaults.create_ddp_model
    if getattr(original, "cpu_ready", False):
        return

    def create_ddp_model(model, **kwargs):
        kwargs.setdefault("device_ids", None)
        return original(model, **kwargs)

    create_ddp_model.cpu_ready = True  # type: ignore[attr-defined]
    defaults.create_ddp_model = create_ddp_model


def _cpu_worker(local_rank: int, main_func, world_size: int, procs_per_machine: int,
                machine_rank: int, dist_url: str, args: tuple, timeout=TIMEOUT) -> None:
    """Detectron2's ``_distributed_worker`` for CPU processes: gloo, no device."""
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // procs_per_machine))
    rank = machine_rank * procs_per_machine + local_rank
    dist.init_process_group(backend="gloo", init_method=dist_url, world_size=world_size,
                            rank=rank, timeout=timeout)
    num_machines = world_size // procs_per_machine
    for i in range(num_machines):  # the per-machine groups comm.get_local_rank() reads
        group = dist.new_group(list(range(i * procs_per_machine, (i + 1) * procs_per_machine)))
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group
    _ddp_on_cpu()
    comm.synchronize()
    try:
        main_func(*args)
    finally:
        dist.destroy_process_group()


def start(main_func, topology: Topology, args: tuple) -> mp.ProcessContext:
    """Start this machine's processes (``main_func(*args)`` in each); returns at once."""
    url = _free_url() if topology.dist_url == "auto" else topology.dist_url
    if topology.dist_url == "auto" and topology.num_machines > 1:
        raise ValueError("several machines need one dist_url all of them can reach")
    if topology.backend == "nccl":
        from detectron2.engine.launch import _distributed_worker as worker
    else:
        worker = _cpu_worker
    return mp.start_processes(
        worker, nprocs=topology.procs_per_machine, join=False, start_method="spawn",
        args=(main_func, topology.world_size, topology.procs_per_machine,
              topology.machine_rank, url, args, TIMEOUT))


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomically (the reader polls it while it is rewritten)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}


def train_process(spec: dict[str, Any]) -> None:
    """One training process: the dataset and config from ``spec``, the trainer, and
    (rank 0) progress, checkpoints and the final model as files in ``spec["work"]``.

    ``spec``: ``work``, ``config`` (YAML text), ``dataset``, ``coco``, ``image_root``,
    ``progress_period``, ``publish_period``, ``join_key`` (hex; every process of the
    run has the same).
    """
    if comm.get_world_size() > 1:  # before any collective of Detectron2's
        harden_collectives()
        check_peers(bytes.fromhex(spec["join_key"]))
    from training.artifacts import config_from_yaml, save_model_version
    from training.datasets import register_coco_dataset
    from training.trainer import CXRTrainer

    work = Path(spec["work"])
    cfg = config_from_yaml(spec["config"])
    cfg.OUTPUT_DIR = str(work / "out")  # this machine's (rank 0's folder is not here)
    register_coco_dataset(spec["dataset"], spec["coco"], spec["image_root"])
    if cfg.SEED >= 0:
        from detectron2.utils.env import seed_all_rng

        seed_all_rng(cfg.SEED + comm.get_rank())
    lead = comm.is_main_process()
    report: dict[str, Any] = {"world_size": comm.get_world_size(), "backend":
                              dist.get_backend() if dist.is_initialized() else "none"}

    def unwrap(model):
        return getattr(model, "module", model)

    def progress(p) -> None:
        if lead:
            report.update(iteration=p.iteration, max_iter=p.max_iter,
                          eta_seconds=p.eta_seconds, losses=p.losses)
            write_json(work / PROGRESS_FILE, report)

    def publish(iteration: int, model) -> None:
        if lead:
            folder = Path(tempfile.mkdtemp(dir=work, prefix=".ckpt-"))
            _, digest = save_model_version(unwrap(model), cfg, folder)
            os.replace(folder, work / f"{CHECKPOINT_DIR}-{iteration}")
            report["checkpoint"] = {"iteration": iteration, "sha256": digest,
                                    "folder": f"{CHECKPOINT_DIR}-{iteration}"}
            write_json(work / PROGRESS_FILE, report)

    trainer = CXRTrainer(cfg, progress=progress, progress_period=int(spec["progress_period"]),
                         publish=publish, publish_period=int(spec["publish_period"]))
    trainer.resume_or_load(resume=False)
    trainer.train()
    if lead:
        folder = Path(tempfile.mkdtemp(dir=work, prefix=".final-"))
        _, digest = save_model_version(unwrap(trainer.model), cfg, folder)
        os.replace(folder, work / RESULT_DIR)
        report["final"] = {"sha256": digest}
        write_json(work / PROGRESS_FILE, report)
    comm.synchronize()
