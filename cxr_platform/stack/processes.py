"""Start a planned process, know when it is ready, stop it (its whole process group).

Every service runs in its own session (``start_new_session``), so a signal to its group
reaches gunicorn's or Celery's children too, as a container stop would.  Output goes to a
log file (a pipe would fill up and block the process).  Secrets travel in the environment,
never in argv, so ``ps`` shows none.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from cxr_platform.stack.plan import ProcessPlan


class StartError(RuntimeError):
    """A service exited or did not become ready; the message carries its log tail."""


def spawn(plan: ProcessPlan, log: Path) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    for folder in (plan.cwd, *plan.dirs):
        folder.mkdir(parents=True, exist_ok=True)
    if not Path(plan.argv[0]).exists():
        raise StartError(f"{plan.name}: {plan.argv[0]} does not exist (run scripts/setup)")
    with open(log, "ab") as out:
        out.write(f"--- start {time.strftime('%H:%M:%S')}: {' '.join(plan.argv)}\n".encode())
        out.flush()
        return subprocess.Popen(plan.argv, cwd=plan.cwd, env=plan.env,  # noqa: S603
                                stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return None


def _health_up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
            return json.loads(response.read()).get("status") == "UP"
    except (OSError, ValueError):
        return False


def _tcp(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def celery_nodes(plan: ProcessPlan, nodes: list[str], timeout: float = 2.0) -> set[str]:
    """The nodes among ``nodes`` that answer ``celery inspect ping`` (through the broker)."""
    celery = next(a for a in plan.argv if Path(a).name == "celery")
    proc = subprocess.run(  # noqa: S603
        [str(celery), "-A", "cxr_platform", "inspect", "ping", "--json", "--timeout",
         str(timeout), "-d", ",".join(nodes)], cwd=plan.cwd, env=plan.env,
        capture_output=True, text=True, timeout=60, check=False)
    answered: set[str] = set()
    for line in proc.stdout.splitlines():
        try:
            answered |= set(json.loads(line))
        except ValueError:
            continue
    return answered


def node_name(template: str) -> str:
    """Celery's ``%h`` expansion (the full host name)."""
    return template.replace("%h", socket.gethostname())


def is_ready(plan: ProcessPlan) -> bool:
    """One readiness probe, no waiting (celery nodes are checked in bulk by the caller)."""
    kind, _, arg = plan.ready.partition(":")
    if kind == "http":
        status = _http_status(arg)
        return status is not None and status < 500
    if kind == "health-up":
        return _health_up(arg)
    if kind == "tcp":
        return _tcp(int(arg))
    if kind == "file":  # the file or its dbm siblings (celerybeat-schedule.dat, ...)
        return Path(arg).exists() or any(Path(arg).parent.glob(Path(arg).name + ".*"))
    if kind == "celery":
        return bool(celery_nodes(plan, [node_name(arg)]))
    return True  # "alive:": running is all there is to check


def log_tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_ready(plans: list[ProcessPlan], procs: dict[str, subprocess.Popen[bytes]],
               logs: dict[str, Path], timeout: float) -> dict[str, float]:
    """Block until every plan is ready; seconds each took.  StartError on exit or timeout."""
    began = time.monotonic()
    pending = {p.name: p for p in plans}
    took: dict[str, float] = {}
    while pending:
        for name in list(pending):
            code = procs[name].poll()
            if code is not None:
                raise StartError(f"{name} exited with status {code} while starting; "
                                 f"{logs[name]}:\n{log_tail(logs[name])}")
        celery = [p for p in pending.values() if p.ready.startswith("celery:")]
        if celery:
            answered = celery_nodes(celery[0], [node_name(p.ready[7:]) for p in celery])
            for plan in celery:
                if node_name(plan.ready[7:]) in answered:
                    took[plan.name] = time.monotonic() - began
                    del pending[plan.name]
        for name, plan in list(pending.items()):
            if not plan.ready.startswith("celery:") and is_ready(plan):
                took[name] = time.monotonic() - began
                del pending[name]
        if pending and time.monotonic() - began > timeout:
            name = next(iter(pending))
            raise StartError(f"{', '.join(pending)} not ready after {timeout:.0f} s; "
                             f"{logs[name]}:\n{log_tail(logs[name])}")
        if pending:
            time.sleep(0.3)
    return took


def started(pid: int) -> str | None:
    """When the process ``pid`` started (clock ticks since boot, /proc/<pid>/stat field
    22), or None: with the pid, it names one process, so a pid reused later is not it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def alive(pid: int, start: str | None = None) -> bool:
    """The process runs (and, with ``start``, is the one that started then)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False  # PermissionError: another user's process, never one of ours
    return start is None or started(pid) == start


def ours(pid: int, start: str | None) -> bool:
    """A recorded group leader that is still the stack's: same process, still leading."""
    try:
        return alive(pid, start) and os.getpgid(pid) == pid
    except ProcessLookupError:
        return False


def signal_group(pid: int, sig: int) -> bool:
    """Send ``sig`` to the process group led by ``pid``; False when it is gone."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return False
    return True


def stop(pid: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 20.0) -> None:
    """SIGTERM the group (warm shutdown), SIGKILL it after ``timeout``; reap the leader."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        if not signal_group(pid, sig):
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                break
            if proc is None and not alive(pid):
                break
            time.sleep(0.1)
        else:
            continue
        break
    if proc is not None:
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
    # children that outlived their leader (a killed gunicorn master's workers)
    signal_group(pid, signal.SIGKILL)
