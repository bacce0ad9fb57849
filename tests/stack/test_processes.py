"""The stack signals only its own processes: a pid recorded in ``stack.json`` names one
process (pid and start time), so a pid the system reused later is never stopped."""

from __future__ import annotations

import subprocess
import sys

from cxr_platform.stack import processes


def test_a_recorded_group_leader_is_ours_and_a_reused_pid_is_not():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                             start_new_session=True)
    try:
        start = processes.started(child.pid)
        assert start is not None
        assert processes.ours(child.pid, start)
        assert not processes.ours(child.pid, str(int(start) + 1))  # another process, same pid
    finally:
        child.kill()
        child.wait()
    assert not processes.ours(child.pid, start)
    assert not processes.alive(child.pid, start)


def test_a_process_that_does_not_lead_its_group_is_not_ours():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert not processes.ours(child.pid, processes.started(child.pid))
    finally:
        child.kill()
        child.wait()
