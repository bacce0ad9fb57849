"""The stack is compose, translated: same services, argv, environment keys and values.

The checks here do not reuse the translator: they re-derive what each translated value
must look like from compose itself (a URL keeps its scheme and path and points at the
stack's port of the service compose names; a container path lands in the stack's folder or
the repository; anything else is unchanged).  Altered copies of compose show that a change
the stack cannot follow fails loudly instead of drifting.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from cxr_platform.stack import Stack, StackError, compose
from cxr_platform.stack.api import COMPOSE_FILE, REPO
from cxr_platform.stack.plan import PASSED_THROUGH, Plan
from cxr_platform.stack.translate import HOST_LIST_KEYS, LS_DATABASE_KEYS
from tests.stack.conftest import free_ports, stack_env

PORTS = {"platform": 18000, "label-studio": 18080, "ml-backend": 19090, "redis": 16380}
_URL = re.compile(r"[a-z][a-z0-9+.-]*://[^\s,]+")


def make_stack(tmp_path: Path, compose_file: Path = COMPOSE_FILE, **env: str) -> Stack:
    return Stack(tmp_path / "stack", env={**stack_env(), **env}, ports=PORTS, redis="own",
                 compose_file=compose_file, databases={"platform": "p_db",
                                                       "label-studio": "ls_db"})


def _url_problem(key: str, before: str, after: str, stack: Stack,
                 published: dict[int, str]) -> str | None:
    old, new = urlsplit(before), urlsplit(after)
    service = old.hostname if old.hostname in PORTS or old.hostname == "postgres" else (
        published.get(old.port or 0))
    want_port = {**PORTS, "postgres": 5432}.get(service or "")
    if service is None or new.hostname != "127.0.0.1" or new.port != want_port:
        return f"{key}: {after!r} does not point at the stack's {service or old.hostname}"
    if old.scheme != new.scheme:
        return f"{key}: scheme changed in {after!r}"
    if old.scheme.startswith("postgres"):
        if new.path.lstrip("/") not in stack.db_names.values() or new.password:
            return f"{key}: {after!r} is not a stack database with trust auth"
    elif old.path != new.path:
        return f"{key}: path changed ({before!r} -> {after!r})"
    return None


def _value_problem(key: str, before: str, after: str, stack: Stack,
                   published: dict[int, str]) -> str | None:
    if key in LS_DATABASE_KEYS or key in HOST_LIST_KEYS:
        return None if all(item not in PORTS for item in after.split(",")) else (
            f"{key}: {after!r} still names a compose host")
    urls_before, urls_after = _URL.findall(before), _URL.findall(after)
    if urls_before:
        if len(urls_before) != len(urls_after):
            return f"{key}: {before!r} -> {after!r}"
        for old, new in zip(urls_before, urls_after, strict=True):
            if problem := _url_problem(key, old, new, stack, published):
                return problem
        return None
    if before.startswith("/"):
        local = Path(after)
        inside = local.is_relative_to(stack.root) or local.is_relative_to(REPO)
        return None if inside else f"{key}: container path {before!r} became {after!r}"
    return None if before == after else f"{key}: {before!r} changed to {after!r}"


def parity_problems(stack: Stack, plan: Plan) -> list[str]:
    """Every way the plan differs from compose beyond the documented translation."""
    services = stack.services_from_compose()
    published = {host: name for name, s in services.items() if not s.profiles
                 for host, _ in s.ports}
    problems = []
    for name, service in services.items():
        if name not in plan.processes:
            if name not in plan.skipped:
                problems.append(f"{name}: in compose, not in the stack and not skipped")
            continue
        proc = plan.processes[name]
        image = service.image
        expected = [*(image.entrypoint if image else []), *service.command]
        got = proc.argv[:len(expected)]
        if len(got) != len(expected):
            problems.append(f"{name}: argv {proc.argv} shorter than compose's {expected}")
            continue
        for before, after in zip(expected, got, strict=True):
            same = before == after or Path(before).name == Path(after).name or (
                before == "0.0.0.0" and after == "127.0.0.1") or (  # noqa: S104
                before.startswith("0.0.0.0:") and after == f"127.0.0.1:{PORTS[name]}") or (
                before.isdigit() and after == str(PORTS.get(name)))
            if not same and not (before.startswith("/") and Path(after).is_relative_to(
                    stack.root)):
                problems.append(f"{name}: argv item {before!r} became {after!r}")
        tail = proc.argv[len(expected):]
        allowed_tail = {"gunicorn": ["--bind", f"127.0.0.1:{PORTS.get(name)}"],
                        "redis-server": ["--port", str(PORTS.get(name)), "--bind",
                                         "127.0.0.1", "--dir"]}
        prog = Path(service.command[0]).name if service.command else ""
        if tail and tail[:len(allowed_tail.get(prog, []))] != allowed_tail.get(prog):
            problems.append(f"{name}: argv gained {tail}")
        want_env = {**(image.env if image else {}), **service.environment}
        missing = set(want_env) - set(proc.env)
        extra = set(proc.env) - set(want_env) - set(PASSED_THROUGH) - {"PATH"}
        problems += [f"{name}: environment lacks {k}" for k in sorted(missing)]
        problems += [f"{name}: environment has {k}, compose does not" for k in sorted(extra)]
        for key in sorted(set(want_env) & set(proc.env)):
            if problem := _value_problem(key, want_env[key], proc.env[key], stack, published):
                problems.append(f"{name}: {problem}")
    return problems


def test_every_compose_service_runs_with_compose_argv_and_environment(tmp_path):
    stack = make_stack(tmp_path)
    plan = stack.plan()
    assert set(plan.processes) == {"platform", "worker-ingest", "worker-default",
                                   "worker-gpu", "worker-beat", "label-studio", "ml-backend",
                                   "redis"}
    assert plan.skipped == {"ml-backend-gpu": "only with compose profile gpu",
                            "postgres": "this machine's own service"}
    assert parity_problems(stack, plan) == []


def test_label_studio_runs_on_postgresql_with_the_bridge(tmp_path):
    env = make_stack(tmp_path).plan().processes["label-studio"].env
    assert env["DJANGO_DB"] == "default"  # Label Studio's name for PostgreSQL
    assert (env["POSTGRE_HOST"], env["POSTGRE_PORT"], env["POSTGRE_NAME"]) == (
        "127.0.0.1", "5432", "ls_db")
    assert env["DJANGO_SETTINGS_MODULE"] == "cxr_bridge.settings"
    assert Path(env["PYTHONPATH"], "cxr_bridge", "settings.py").is_file()


def test_the_checker_catches_a_plan_that_drifted(tmp_path):
    stack = make_stack(tmp_path)
    plan = stack.plan()
    worker = plan.processes["worker-gpu"]
    worker.env.pop("CXR_MODEL_DIR")
    worker.env["CXR_SURPRISE"] = "1"
    worker.argv[worker.argv.index("gpu")] = "default"
    plan.processes["platform"].env["DATABASE_URL"] = "postgres://postgres@127.0.0.1:5432/other"
    del plan.processes["ml-backend"]
    problems = parity_problems(stack, plan)
    assert any("worker-gpu: environment lacks CXR_MODEL_DIR" in p for p in problems)
    assert any("CXR_SURPRISE" in p for p in problems)
    assert any("argv item 'gpu' became 'default'" in p for p in problems)
    assert any("DATABASE_URL" in p for p in problems)
    assert any(p.startswith("ml-backend: in compose, not in the stack") for p in problems)


def _altered(tmp_path: Path, change) -> Path:
    """A copy of compose (builds still pointing at the repository) after ``change``."""
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    for service in data["services"].values():
        if isinstance(service.get("build"), dict):
            service["build"]["context"] = str(REPO)
    change(data)
    path = tmp_path / "compose.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_new_host_name_in_compose_fails_with_its_name(tmp_path):
    path = _altered(tmp_path, lambda d: d["services"]["platform"]["environment"].update(
        CXR_OBJECT_STORE_URL="http://minio:9000/bucket"))
    with pytest.raises(ValueError, match="host 'minio' is neither a compose service"):
        make_stack(tmp_path, path).plan()


def test_a_new_container_path_in_compose_fails_with_the_path(tmp_path):
    path = _altered(tmp_path, lambda d: d["services"]["worker-gpu"].update(
        command=["celery", "-A", "cxr_platform", "worker", "--logfile", "/var/log/w.log"]))
    with pytest.raises(ValueError, match="container path '/var/log/w.log' is under no"):
        make_stack(tmp_path, path).plan()


def test_a_changed_compose_command_is_what_the_stack_runs(tmp_path):
    def fewer(data: dict) -> None:
        command = data["services"]["worker-ingest"]["command"]
        command[command.index("--concurrency") + 1] = "3"

    argv = make_stack(tmp_path, _altered(tmp_path, fewer)).plan().processes[
        "worker-ingest"].argv
    assert argv[argv.index("--concurrency") + 1] == "3"


def test_a_missing_required_variable_is_a_short_error_naming_it(tmp_path):
    env = stack_env()
    env.pop("CXR_SECRET_KEY")
    stack = Stack(tmp_path, env=env, ports=free_ports(), redis="own")
    with pytest.raises(StackError, match=r"needs these environment variables: "
                                         r"CXR_SECRET_KEY \(set CXR_SECRET_KEY\)"):
        stack.plan()


@pytest.mark.parametrize(("text", "env", "want"), [
    ("${A:-x}", {}, "x"), ("${A:-x}", {"A": ""}, "x"), ("${A-x}", {"A": ""}, ""),
    ("${A:+y}", {"A": "1"}, "y"), ("$$A", {"A": "1"}, "$A"), ("$A/b", {"A": "1"}, "1/b"),
    ("${A:-${B:-z}}", {}, "z"),
])
def test_interpolation_follows_compose(text, env, want):
    missing: list[str] = []
    assert compose._interpolate(text, env, missing, frozenset()) == want and not missing
