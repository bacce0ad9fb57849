"""Faults injected into a real Celery worker process (tests only).

``python -m tests.faults FAULT[,FAULT] FAULT_DIR celery -A cxr_platform worker ...``
starts an ordinary worker with the named faults installed.  Each fault wraps one
function of the platform the first time a task starts in the worker (Django is
set up by then) and talks to the test through marker files in ``FAULT_DIR``:

* ``prelabel_oserror_once``: the first pre-labelling attempt, in any process,
  raises ``OSError`` when it loads its model (a file system that was briefly
  away); later attempts run normally.
* ``consensus_slow``: a consensus run writes ``consensus_storing`` when it
  starts storing (inside its transaction) and then sleeps, so the test can
  SIGKILL the worker mid-run.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

_installed: set[str] = set()


def _once(marker: Path) -> bool:
    """True for the first caller over all processes (an exclusive create)."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def _prelabel_oserror_once(folder: Path) -> None:
    from annotations.services import prelabeling

    real = prelabeling._detector

    def flaky(*args, **kwargs):
        if _once(folder / "prelabel_oserror"):
            raise OSError("injected: model file briefly unreadable")
        return real(*args, **kwargs)

    prelabeling._detector = flaky


def _consensus_slow(folder: Path) -> None:
    from annotations.services import consensus

    real = consensus._store

    def slow(*args, **kwargs):
        (folder / "consensus_storing").touch()
        time.sleep(120)
        return real(*args, **kwargs)

    consensus._store = slow


FAULTS = {"prelabel_oserror_once": _prelabel_oserror_once, "consensus_slow": _consensus_slow}


def main() -> None:
    names, folder, *command = sys.argv[1:]
    from celery import signals

    @signals.task_prerun.connect(weak=False)
    def install(**_kwargs) -> None:
        for name in names.split(","):
            if name and name not in _installed:
                FAULTS[name](Path(folder))
                _installed.add(name)

    from celery.__main__ import main as celery_main

    sys.argv = command
    celery_main()


if __name__ == "__main__":
    main()
