"""``Stack``: compose's services as local processes, one stack per folder.

    with Stack(root, env=env, ports={...}, databases={...}, redis="own") as stack:
        stack.url("platform"); stack.kill("worker-gpu"); stack.restart("label-studio")

The folder holds everything of one stack: ``stack.json`` (pids, ports, databases: what
``down``/``status`` read from another shell), ``logs/<service>.log``, ``volumes/<name>``
(compose's named volumes), ``secrets/`` (mode 0700).  Faults are this stack's only:
signals go to its own process groups, a PostgreSQL "outage" ends sessions on its own
databases and refuses new ones (``postgres_outage``), and with ``redis="own"`` Redis is a
``redis-server`` of its own (compose's command, append-only file in its volume) that
``restart("redis")`` restarts with its queued tasks.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Literal

from cxr_platform.stack import compose, databases, processes
from cxr_platform.stack.plan import Plan, ProcessPlan, Venvs, plan_services
from cxr_platform.stack.translate import LOOPBACK, Layout

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker" / "compose.yml"
LS_VERSION = "1.23.2"
#: The ML backend's platform token is made by the platform (``manage.py ml_backend_token``)
#: after it migrated, so it may be left unset: the stack then makes one.
BOOTSTRAPPED = frozenset({"CXR_ML_PLATFORM_TOKEN"})
#: Start order: each wave is started together and waited for before the next.
WAVES: tuple[tuple[str, ...], ...] = (("redis",), ("platform", "label-studio"))
#: Shared Redis: compose's database numbers -> the stack's (the test suite uses 15, a
#: developer's own work 0 and 1).
SHARED_REDIS_DBS = {"0": "13", "1": "14"}


class StackError(RuntimeError):
    """The stack cannot start or do what was asked; the message says why."""


def cache_dir() -> Path:
    return Path(os.environ.get("CXR_CACHE_DIR") or Path.home() / ".cache/cxr-platform")


def default_venvs() -> Venvs:
    return Venvs(platform=REPO / ".venv",
                 label_studio=cache_dir() / "label-studio" / f"venv-{LS_VERSION}")


class Stack:
    """One stack of compose's services on this machine (see the module docstring).

    ``env``: the variables compose would read (secrets included; never logged).
    ``ports``: service -> local port, for every service that publishes one (and ``redis``
    with ``redis="own"``); default the published ports.  ``databases``: ``platform`` and
    ``label-studio`` -> database names on the local server.  ``extra_env``: service ->
    variables added on top of compose's (tests: shorter heartbeats); the parity test
    checks the stack without them.
    """

    def __init__(self, root: str | Path, *, env: Mapping[str, str],
                 ports: Mapping[str, int] | None = None,
                 databases: Mapping[str, str] | None = None,
                 redis: Literal["shared", "own"] = "shared",
                 extra_env: Mapping[str, Mapping[str, str]] | None = None,
                 pg: tuple[str, int, str] = (LOOPBACK, 5432, "postgres"),
                 compose_file: Path = COMPOSE_FILE, venvs: Venvs | None = None,
                 startup_timeout: float = 300.0) -> None:
        self.root = Path(root).resolve()
        self.env = dict(env)
        self.redis_mode = redis
        self.extra_env = {k: dict(v) for k, v in (extra_env or {}).items()}
        self.pg = pg
        self.compose_file = Path(compose_file)
        self.venvs = venvs or default_venvs()
        self.startup_timeout = startup_timeout
        self.db_names = {"platform": "cxr_stack", "label-studio": "cxr_stack_ls",
                         **(databases or {})}
        self._ports = dict(ports or {})
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._pids: dict[str, int] = {}
        self._plan: Plan | None = None
        #: seconds each service took to become ready at its last start
        self.ready_seconds: dict[str, float] = {}

    # --- the plan -----------------------------------------------------------------------
    def services_from_compose(self) -> dict[str, compose.Service]:
        deferred = frozenset(k for k in BOOTSTRAPPED if not self.env.get(k))
        try:
            return compose.load(self.compose_file, self.env, deferred=deferred)
        except compose.ComposeError as exc:
            raise StackError(str(exc)) from exc

    def layout(self, services: Mapping[str, compose.Service]) -> Layout:
        published = {host: name for name, s in services.items() if not s.profiles
                     for host, _ in s.ports}
        ports = {name: host for host, name in published.items()}
        ports.update(postgres=self.pg[1], redis=6379)
        ports.update(self._ports)
        pg_db = services["postgres"].environment.get("POSTGRES_DB", "postgres")
        ls_db = services["label-studio"].environment.get("POSTGRE_NAME", "label_studio")
        return Layout(ports=ports, published=published, pg_user=self.pg[2],
                      databases={pg_db: self.db_names["platform"],
                                 ls_db: self.db_names["label-studio"]},
                      redis_dbs=SHARED_REDIS_DBS if self.redis_mode == "shared" else None)

    def plan(self, *, extra: bool = True) -> Plan:
        """The processes (pure: reads compose and the Dockerfiles, starts nothing)."""
        if self._plan is not None and extra:
            return self._plan
        services = self.services_from_compose()
        plan = plan_services(services, layout=self.layout(services), repo=REPO,
                             compose_dir=self.compose_file.parent,
                             volumes_root=self.root / "volumes", venvs=self.venvs,
                             own_redis=self.redis_mode == "own",
                             extra=self.extra_env if extra else None)
        if extra:
            self._plan = plan
        return plan

    def process(self, service: str) -> ProcessPlan:
        try:
            return self.plan().processes[service]
        except KeyError:
            raise StackError(f"the stack runs no service {service!r}") from None

    @property
    def services(self) -> list[str]:
        return list(self.plan().processes)

    # --- where things are ---------------------------------------------------------------
    def url(self, service: str) -> str:
        port = self.process(service).port
        if port is None:
            raise StackError(f"{service} listens on no port")
        scheme = "redis" if service == "redis" else "http"
        return f"{scheme}://{LOOPBACK}:{port}"

    def broker_url(self) -> str:
        return self.process("worker-default").env["CELERY_BROKER_URL"]

    def database_url(self, service: str = "platform") -> str:
        host, port, user = self.pg
        return f"postgres://{user}@{host}:{port}/{self.db_names[service]}"

    def log_path(self, service: str) -> Path:
        return self.root / "logs" / f"{service}.log"

    def logs(self, service: str, lines: int | None = None) -> str:
        text = self.log_path(service).read_text(errors="replace") if self.log_path(
            service).exists() else ""
        return "\n".join(text.splitlines()[-lines:]) if lines else text

    def pid(self, service: str) -> int | None:
        """The pid (and process group) of the running service, None when it is not."""
        pid = self._pids.get(service)
        proc = self._procs.get(service)
        if pid is None or (proc is not None and proc.poll() is not None) or (
                proc is None and not processes.alive(pid)):
            return None
        return pid

    def env_of(self, service: str) -> dict[str, str]:
        """The service's process environment (holds secrets: do not print it)."""
        return dict(self.process(service).env)

    # --- lifecycle ----------------------------------------------------------------------
    def up(self) -> Stack:
        """Databases, then every service in waves, each wave waited for; ``down`` on error.

        Refused while a stack recorded in the same folder still runs: a second ``up``
        would overwrite its state file and leave its processes without a ``down``."""
        live = sorted(n for n, info in status_from_state(self.root).items() if info["alive"])
        if live:
            raise StackError(f"a stack already runs in {self.root} ({', '.join(live)}): "
                             "stop it first (scripts/stack down)")
        try:
            self._prepare()
            plan = self.plan()
            first = [s for wave in WAVES for s in wave if s in plan.processes]
            for wave in WAVES:
                self._start_many([s for s in wave if s in plan.processes])
            self._bootstrap_tokens()
            self._start_many([s for s in self.plan().processes if s not in first])
        except BaseException:
            self.down()
            raise
        return self

    def _prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)  # logs carry signed links and sign-in tickets: owner only
        for sub in ("logs", "volumes", "secrets"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "secrets").chmod(0o700)
        ls = self.plan().processes.get("label-studio")
        template = databases.ls_template_name(LS_VERSION, REPO / "label_studio_bridge")
        try:
            if ls is not None:
                built = databases.ls_template_ensure(
                    name=template, python=self.venvs.label_studio / "bin" / "python",
                    env=ls.env, lock_dir=cache_dir() / "label-studio", pg=self.pg,
                    log=self.root / "logs" / "label-studio-template.log")
                self.ready_seconds["label-studio-template-built"] = float(built)
            with databases.admin(*self.pg) as cur:
                databases.create(cur, self.db_names["platform"])
                if ls is not None:
                    databases.create(cur, self.db_names["label-studio"], template=template)
        except (databases.DatabaseError, OSError) as exc:
            raise StackError(str(exc)) from exc
        except databases.psycopg2.Error as exc:
            raise StackError(f"PostgreSQL {self.pg[0]}:{self.pg[1]}: {exc}") from exc

    def _bootstrap_tokens(self) -> None:
        if self.env.get("CXR_ML_PLATFORM_TOKEN"):
            return
        proc = self.manage("ml_backend_token")
        token = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
        if proc.returncode != 0 or not token:
            raise StackError(f"manage.py ml_backend_token failed: {proc.stderr[-2000:]}")
        path = self.root / "secrets" / "ml-platform-token"
        path.write_text(token)
        path.chmod(0o600)
        self.env["CXR_ML_PLATFORM_TOKEN"] = token
        self._plan = None

    def _start_many(self, names: list[str]) -> None:
        if not names:
            return
        plans = [self.process(n) for n in names]
        for plan in plans:
            if self.pid(plan.name) is not None:
                raise StackError(f"{plan.name} is already running (pid {self.pid(plan.name)})")
            try:
                self._procs[plan.name] = processes.spawn(plan, self.log_path(plan.name))
            except processes.StartError as exc:
                raise StackError(str(exc)) from exc
            self._pids[plan.name] = self._procs[plan.name].pid
        self._save()
        try:
            took = processes.wait_ready(plans, self._procs,
                                        {n: self.log_path(n) for n in names},
                                        self.startup_timeout)
        except processes.StartError as exc:
            raise StackError(str(exc)) from exc
        self.ready_seconds.update(took)

    def start(self, service: str, *, wait: bool = True) -> None:
        """Start one service (after ``stop``/``kill``); wait until ready unless told not to."""
        if wait:
            self._start_many([service])
            return
        plan = self.process(service)
        self._procs[service] = processes.spawn(plan, self.log_path(service))
        self._pids[service] = self._procs[service].pid
        self._save()

    def wait_ready(self, service: str, timeout: float | None = None) -> float:
        took = processes.wait_ready([self.process(service)], self._procs,
                                    {service: self.log_path(service)},
                                    timeout or self.startup_timeout)
        return took[service]

    def stop(self, service: str, timeout: float = 20.0) -> None:
        """SIGTERM the service's process group (a warm shutdown), SIGKILL after ``timeout``."""
        pid = self._pids.pop(service, None)
        proc = self._procs.pop(service, None)
        if pid is not None:
            processes.stop(pid, proc, timeout)
        self._save()

    def kill(self, service: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the service's whole process group (SIGKILL: the node is gone).

        The service is not restarted; ``start`` it again.  With SIGKILL the leader is
        reaped here, so ``pid`` answers None at once.
        """
        pid = self.pid(service)
        if pid is None:
            raise StackError(f"{service} is not running")
        processes.signal_group(pid, sig)
        if sig == signal.SIGKILL:
            proc = self._procs.get(service)
            if proc is not None:
                proc.wait(30)

    def restart(self, service: str, *, timeout: float = 20.0) -> None:
        self.stop(service, timeout)
        self.start(service)

    def down(self) -> None:
        """Stop every service of this stack (reverse start order); databases are kept."""
        state = read_state(self.root)
        pids = {**{k: v["pid"] for k, v in state.get("services", {}).items()
                   if processes.ours(int(v["pid"]), v.get("started"))}, **self._pids}
        for name in reversed(list(pids)):
            processes.stop(pids[name], self._procs.get(name))
        self._procs.clear()
        self._pids.clear()
        self._save()

    def drop_databases(self) -> None:
        """Drop this stack's two databases (only ever names the caller gave the stack)."""
        with databases.admin(*self.pg) as cur:
            for name in self.db_names.values():
                databases.drop(cur, name)

    # --- helpers for tests and faults ---------------------------------------------------
    def manage(self, *args: str, timeout: float = 300.0,
               env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """``manage.py <args>`` with the platform's environment (stdout, stderr captured)."""
        plan = self.process("platform")
        child = {**plan.env, "CXR_MIGRATE_ON_START": "0", **(env or {})}
        return subprocess.run(  # noqa: S603 - fixed program
            [str(self.venvs.platform / "bin" / "python"), "manage.py", *args], cwd=plan.cwd,
            env=child, capture_output=True, text=True, timeout=timeout, check=False)

    def terminate_db_backends(self) -> int:
        """End every session on this stack's databases (a PostgreSQL restart, as they see
        it); other databases of the server are untouched.  Returns how many ended."""
        with databases.admin(*self.pg) as cur:
            return databases.terminate_backends(cur, self.db_names.values())

    @contextlib.contextmanager
    def postgres_outage(self) -> Iterator[None]:
        """Within: this stack's databases refuse connections and lose their sessions."""
        names = list(self.db_names.values())
        with databases.admin(*self.pg) as cur:
            databases.allow_connections(cur, names, False)
            databases.terminate_backends(cur, names)
        try:
            yield
        finally:
            with databases.admin(*self.pg) as cur:
                databases.allow_connections(cur, names, True)

    def _save(self) -> None:
        if not self.root.exists():
            return
        plan = self._plan
        state = {
            "databases": self.db_names,
            "services": {name: {"pid": pid, "started": processes.started(pid),
                                "log": str(self.log_path(name)),
                                "url": self.url(name) if plan and plan.processes[name].port
                                else None}
                         for name, pid in self._pids.items()},
        }
        tmp = self.root / "stack.json.tmp"
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.root / "stack.json")

    def __enter__(self) -> Stack:
        return self.up()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.down()


def read_state(root: Path) -> dict:
    path = Path(root) / "stack.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def down_from_state(root: Path, timeout: float = 20.0) -> list[str]:
    """Stop what ``stack.json`` lists (``scripts/stack down`` from another shell)."""
    state = read_state(root)
    names = list(state.get("services", {}))
    for name in reversed(names):
        info = state["services"][name]
        if processes.ours(int(info["pid"]), info.get("started")):  # never a reused pid
            processes.stop(int(info["pid"]), None, timeout)
    if state:
        state["services"] = {}
        (Path(root) / "stack.json").write_text(json.dumps(state, indent=2))
    return names


def status_from_state(root: Path) -> dict[str, dict]:
    state = read_state(root)
    return {name: {**info, "alive": processes.alive(int(info["pid"]), info.get("started"))}
            for name, info in state.get("services", {}).items()}


def wait_for(predicate, timeout: float, interval: float = 0.5):  # noqa: ANN001, ANN201
    """Poll ``predicate`` until it returns something truthy (tests' helper); None on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return None
