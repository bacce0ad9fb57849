"""``python manage.py train_join RUN --machine-rank R --dist-url tcp://HOST:PORT``

Joins a detector training run that trains on several machines (params ``"machines"``),
from one of the other machines: this machine's processes (the run's ``"processes"``)
train on the data rank 0 stored; rank 0, the gpu worker, reports and registers.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from annotations.errors import DomainError
from annotations.services.distributed_training import train_join


class Command(BaseCommand):
    help = "Join a multi-machine detector training run from this machine."

    def add_arguments(self, parser):
        parser.add_argument("run", type=int, help="the training run's id")
        parser.add_argument("--machine-rank", type=int, required=True,
                            help="this machine's rank, 1..machines-1 (0 is the gpu worker)")
        parser.add_argument("--dist-url", required=True,
                            help="rank 0's rendezvous, its CXR_TRAIN_DIST_URL")
        parser.add_argument("--wait", type=float, default=600.0,
                            help="seconds to wait for the run to start")

    def handle(self, *args, run, machine_rank, dist_url, wait, **opts):
        try:
            train_join(run_id=run, machine_rank=machine_rank, dist_url=dist_url,
                       wait_seconds=wait)
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"training run {run}: machine {machine_rank} done")
