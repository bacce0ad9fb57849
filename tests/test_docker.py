"""Docker cannot run on the CI machines: check the compose file statically.

Every service must have a command (or an image that brings its own), every file
the build or the command refers to must exist, and the commands must name
modules that exist in this repository.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker" / "compose.yml"


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_expected_services_present():
    services = _compose()["services"]
    for name in ("platform", "worker-ingest", "worker-default", "worker-gpu", "worker-beat",
                 "label-studio", "ml-backend", "ml-backend-gpu", "postgres", "redis"):
        assert name in services, name


def _resolved(services: dict) -> dict:
    """Apply ``extends`` within the file (compose semantics, shallow merge)."""
    out = {}
    for name, svc in services.items():
        base = services[svc["extends"]] if "extends" in svc else {}
        out[name] = {**base, **{k: v for k, v in svc.items() if k != "extends"}}
    return out


def test_build_contexts_and_dockerfiles_exist():
    for name, svc in _resolved(_compose()["services"]).items():
        if "build" in svc:
            context = (COMPOSE.parent / svc["build"]["context"]).resolve()
            assert context.is_dir(), name
            assert (context / svc["build"]["dockerfile"]).is_file(), name
        else:
            assert "image" in svc, f"{name} has neither build nor image"


def test_dockerfile_copies_existing_files():
    text = (ROOT / "docker" / "Dockerfile").read_text()
    for line in text.splitlines():
        if line.startswith("COPY ") and not line.startswith(("COPY . ", "COPY --from=")):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), src


def test_service_commands_refer_to_real_code():
    for name, svc in _resolved(_compose()["services"]).items():
        if "build" not in svc:
            continue
        cmd = svc.get("command")
        assert cmd, f"{name} has no command"
        program = cmd[0]
        if program == "label-studio":
            dockerfile = (ROOT / "docker" / svc["build"]["dockerfile"].split("/")[-1]).read_text()
            assert "label-studio==1.23.2" in dockerfile and cmd[1] == "start"
            continue
        if program == "gunicorn":
            module, _, attr = cmd[1].partition(":")
            spec = importlib.util.find_spec(module)
            assert spec is not None and attr == "application", name
            if "--config" in cmd:
                assert (ROOT / cmd[cmd.index("--config") + 1]).is_file(), name
        elif program == "celery":
            app = cmd[cmd.index("-A") + 1]
            assert importlib.util.find_spec(app) is not None, name
            if cmd[3] == "beat":
                continue
            queue = cmd[cmd.index("-Q") + 1]
            assert queue in {"ingest", "default", "gpu"}, queue
        else:  # pragma: no cover - a new kind of service must be checked here
            raise AssertionError(f"unchecked command {program} in {name}")


def test_entrypoint_is_executable():
    entry = ROOT / "docker" / "entrypoint.sh"
    assert entry.is_file() and entry.stat().st_mode & 0o111


def test_platform_accepts_the_host_name_label_studio_posts_to():
    compose = _compose()
    env = compose["x-platform-env"]
    internal = env["CXR_PLATFORM_URL_FOR_LABEL_STUDIO"].split("//")[1].split(":")[0]
    assert internal in env["CXR_ALLOWED_HOSTS"].split(",")
    ls_env = compose["services"]["label-studio"]["environment"]
    assert ls_env["CXR_BRIDGE_SECRET"] == env["CXR_LABEL_STUDIO_BRIDGE_SECRET"]


def test_ml_backend_reads_the_model_folder_the_platform_writes():
    """Same volume, same path; the backend's mount read-only (before: it mounted the
    data volume's root at /models, so it looked for versions where none are written)."""
    compose = _compose()
    env = compose["x-platform-env"]
    model_dir = env["CXR_MODEL_DIR"]
    platform_mounts = {m.split(":")[1]: m.split(":")[0] for m in compose["x-platform"]["volumes"]}
    volume = platform_mounts[model_dir]
    ml = compose["services"]["ml-backend"]
    assert ml["environment"]["CXR_ML_MODEL_DIR"] == model_dir
    assert f"{volume}:{model_dir}:ro" in ml["volumes"]
    assert volume in compose["volumes"]
    for name, service in compose["services"].items():  # every platform service writes there
        if name.startswith(("platform", "worker")):
            assert service.get("volumes", compose["x-platform"]["volumes"]) == \
                compose["x-platform"]["volumes"], name
