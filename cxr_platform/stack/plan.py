"""One local process per compose service: argv, environment, working directory, readiness.

``plan_services`` is pure (files in, dataclasses out): the parity test compares its result
with compose, and ``processes`` only executes it.  Per service:

* argv = the image ENTRYPOINT + the compose command (or the image CMD), translated
  (``translate``), the executable resolved to the virtualenv the service's image stands
  for (``VENVS``);
* environment = a few harmless variables of this shell (``PASSED_THROUGH``, PATH with that
  virtualenv first) + the image's ENV + compose's environment, values translated, + the
  caller's ``extra`` (tests only: e.g. a short heartbeat);
* cwd = the image's WORKDIR, translated (the repository for the platform images);
* ready = how ``processes`` knows it is up.

Skipped: PostgreSQL (this machine's, not a process of the stack), Redis unless the stack
runs its own, and services in a compose profile (listed in ``Plan.skipped`` with why).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cxr_platform.stack.compose import Service
from cxr_platform.stack.translate import LOOPBACK, Layout, Translator, Untranslatable

#: Services this machine provides itself (the stack never starts them as compose would).
LOCAL_SERVICES = ("postgres", "redis")
#: Variables of the calling shell that reach every process (nothing else does: Label Studio
#: and Django read many bare names, e.g. DEBUG, HOST, DJANGO_SETTINGS_MODULE).
PASSED_THROUGH = ("HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TZ", "SSL_CERT_FILE",
                  "REQUESTS_CA_BUNDLE", "USER", "LOGNAME")


@dataclass(frozen=True)
class Venvs:
    """The interpreters the images stand for on this machine."""

    platform: Path
    label_studio: Path

    def for_image(self, service: Service, repo: Path) -> Path | None:
        """The bin folder whose executables the service runs; None: the system's PATH."""
        if service.image is None:
            return None  # a stock image (redis): the system's binary
        dockerfile = service.image.dockerfile.resolve().relative_to(repo).as_posix()
        table = {"docker/Dockerfile": self.platform, "docker/ml-backend.Dockerfile":
                 self.platform, "docker/label-studio.Dockerfile": self.label_studio}
        if dockerfile not in table:
            raise Untranslatable(f"service {service.name!r}: no local virtualenv stands for "
                                 f"{dockerfile} (add it to cxr_platform/stack/plan.py)")
        return table[dockerfile] / "bin"


@dataclass(frozen=True)
class ProcessPlan:
    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    #: "http:<url>" (any answer below 500), "health-up:<url>" (Label Studio's JSON),
    #: "celery:<node name>", "file:<path>" (exists), "tcp:<port>"
    ready: str
    port: int | None = None
    #: the local folders of its volumes (made before it starts, as Docker makes volumes)
    dirs: tuple[Path, ...] = ()
    #: compose's own view of this service, for the parity test
    compose_argv: list[str] = field(default_factory=list)
    compose_env_keys: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Plan:
    processes: dict[str, ProcessPlan]
    #: service -> why the stack does not run it
    skipped: dict[str, str]


def _mounts(service: Service, volumes_root: Path, compose_dir: Path) -> dict[str, Path]:
    mounts: dict[str, Path] = {}
    if service.image is not None:
        mounts.update(service.image.copies)
    for source, target, _read_only in service.volumes:
        if not source:
            local = volumes_root / f"{service.name}-anonymous{target.replace('/', '-')}"
        elif source.startswith((".", "/", "~")):
            local = (compose_dir / os.path.expanduser(source)).resolve()
        else:
            local = volumes_root / source
        mounts[target] = local
    return mounts


def _ready(service: Service, port: int | None, argv: list[str], env: Mapping[str, str]) -> str:
    if service.name == "label-studio":
        return f"health-up:http://{LOOPBACK}:{port}/health"
    if "worker" in argv and "celery" in Path(argv[0]).name:
        node = argv[argv.index("-n") + 1] if "-n" in argv else "celery@%h"
        return f"celery:{node}"
    if "beat" in argv and "celery" in Path(argv[0]).name:
        return f"file:{argv[argv.index('-s') + 1]}" if "-s" in argv else "alive:"
    if Path(argv[0]).name == "redis-server":
        return f"tcp:{port}"
    if port is not None:
        path = "/health/" if service.name == "platform" else "/health"
        return f"http:http://{LOOPBACK}:{port}{path}"
    return "alive:"


def plan_service(service: Service, *, layout: Layout, repo: Path, compose_dir: Path,
                 volumes_root: Path, venvs: Venvs, extra: Mapping[str, str] | None = None,
                 shell_env: Mapping[str, str] | None = None) -> ProcessPlan:
    """The local process for one compose service (raises Untranslatable)."""
    port = layout.ports.get(service.name)
    mounts = _mounts(service, volumes_root, compose_dir)
    container_port = service.ports[0][1] if service.ports else None
    tr = Translator(layout, mounts, service.name,
                    own_port=port, container_port=container_port)
    command = tr.argv(service.command) if service.command else []
    entrypoint = [tr.path(p) if p.startswith("/") else p
                  for p in (service.image.entrypoint if service.image else [])]
    bin_dir = venvs.for_image(service, repo)
    argv = entrypoint + command
    if service.image is None and Path(argv[0]).name == "redis-server":
        # the stock image's defaults, which its command line does not show
        argv += ["--port", str(port), "--bind", LOOPBACK, "--dir", tr.path("/data")]
    exe = argv[0] if not entrypoint else command[0]
    resolved = _executable(exe, bin_dir)
    if entrypoint:
        argv[len(entrypoint)] = resolved
    else:
        argv[0] = resolved
    shell = os.environ if shell_env is None else shell_env
    env = {k: shell[k] for k in PASSED_THROUGH if k in shell}
    path = shell.get("PATH", "/usr/bin:/bin")
    env["PATH"] = f"{bin_dir}:{path}" if bin_dir else path
    image_env = service.image.env if service.image else {}
    for key, value in {**image_env, **service.environment}.items():
        env[key] = tr.env_value(key, value)
    env.update(extra or {})
    workdir = service.image.workdir if service.image else "/"
    cwd = Path(tr.path(workdir)) if workdir != "/" else volumes_root.parent / service.name
    return ProcessPlan(
        name=service.name, argv=argv, env=env, cwd=cwd, port=port,
        dirs=tuple(mounts[target] for _, target, _ in service.volumes),
        ready=_ready(service, port, command or argv, env),
        compose_argv=list(service.image.entrypoint if service.image else []) + list(
            service.command),
        compose_env_keys=frozenset(service.environment),
    )


def _executable(name: str, bin_dir: Path | None) -> str:
    """The image's program in the virtualenv standing for the image (checked at start:
    the plan is also made where the virtualenvs are not built yet), else on PATH."""
    if bin_dir is not None:
        return str(bin_dir / name)
    found = shutil.which(name)
    if found is None:
        raise Untranslatable(f"executable {name!r} is not on PATH")
    return found


def plan_services(services: Mapping[str, Service], *, layout: Layout, repo: Path,
                  compose_dir: Path, volumes_root: Path, venvs: Venvs, own_redis: bool,
                  extra: Mapping[str, Mapping[str, str]] | None = None,
                  shell_env: Mapping[str, str] | None = None) -> Plan:
    processes: dict[str, ProcessPlan] = {}
    skipped: dict[str, str] = {}
    for name, service in services.items():
        if service.profiles:
            skipped[name] = f"only with compose profile {', '.join(service.profiles)}"
            continue
        if name == "postgres" or (name == "redis" and not own_redis):
            skipped[name] = "this machine's own service"
            continue
        processes[name] = plan_service(
            service, layout=layout, repo=repo, compose_dir=compose_dir,
            volumes_root=volumes_root, venvs=venvs, extra=(extra or {}).get(name),
            shell_env=shell_env)
    return Plan(processes, skipped)
