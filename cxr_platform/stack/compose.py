"""Read ``docker/compose.yml`` (and the Dockerfiles it builds) the way Docker Compose does.

Only what the stack needs: variable interpolation (``${VAR}``, ``${VAR:-default}``,
``${VAR-default}``, ``${VAR:?message}``, ``${VAR?message}``, ``${VAR:+alt}``, ``$VAR``,
``$$``), YAML merge keys (PyYAML's safe loader does them), ``extends`` within the file,
``profiles``, the ``.env`` file next to the compose file (the process environment wins),
and from each Dockerfile's last stage its ``ENV``, ``WORKDIR``, ``COPY``, ``ENTRYPOINT`` and
``CMD``, because a container's environment and argv start there.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml


class ComposeError(Exception):
    """The compose file cannot be used as it stands (a missing variable, a bad entry)."""


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _interpolate(text: str, env: Mapping[str, str], missing: list[str],
                 deferred: frozenset[str]) -> str:
    """One string, compose's rules; required-but-unset variables are appended to ``missing``
    (all are reported at once), ``deferred`` ones become ``deferred_marker(name)``."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "$":
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1:i + 2]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "{":
            end, depth = i + 2, 1
            while end < len(text) and depth:
                depth += {"{": 1, "}": -1}.get(text[end], 0)
                end += 1
            if depth:
                raise ComposeError(f"unterminated ${{ in {text!r}")
            out.append(_expand(text[i + 2:end - 1], env, missing, deferred))
            i = end
        elif (match := _NAME.match(text, i + 1)):
            out.append(env.get(match.group(), ""))
            i = match.end()
        else:
            out.append("$")
            i += 1
    return "".join(out)


def _expand(body: str, env: Mapping[str, str], missing: list[str],
            deferred: frozenset[str]) -> str:
    match = _NAME.match(body)
    if not match:
        raise ComposeError(f"bad variable reference ${{{body}}}")
    name, rest = match.group(), body[match.end():]
    value = env.get(name)
    for op in (":-", "-", ":?", "?", ":+", "+"):
        if rest.startswith(op):
            arg = _interpolate(rest[len(op):], env, missing, deferred)
            unset = value is None or (op.startswith(":") and value == "")
            if op in (":-", "-"):
                return arg if unset else str(value)
            if op in (":+", "+"):
                return "" if unset else arg
            if unset:
                if name in deferred:
                    return deferred_marker(name)
                missing.append(f"{name} ({arg or 'required'})")
                return ""
            return str(value)
    if rest:
        raise ComposeError(f"bad variable reference ${{{body}}}")
    return "" if value is None else value


def deferred_marker(name: str) -> str:
    """What a deferred variable resolves to until the stack knows it (see ``api``)."""
    return f"<deferred:{name}>"


def _walk(node: Any, env: Mapping[str, str], missing: list[str],
          deferred: frozenset[str]) -> Any:
    if isinstance(node, str):
        return _interpolate(node, env, missing, deferred)
    if isinstance(node, list):
        return [_walk(item, env, missing, deferred) for item in node]
    if isinstance(node, dict):
        return {key: _walk(value, env, missing, deferred) for key, value in node.items()}
    return node


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines of a compose ``.env`` file (comments, blanks, quotes)."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip().removeprefix("export ").strip()] = value
    return values


@dataclass(frozen=True)
class Image:
    """What a Dockerfile's last stage gives a container before compose adds to it."""

    dockerfile: Path
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    #: container path -> path in the build context, from ``COPY`` (not ``--from``)
    copies: dict[str, Path] = field(default_factory=dict)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Service:
    """One compose service after interpolation, merge keys and ``extends``."""

    name: str
    command: list[str]
    environment: dict[str, str]
    #: (source, container path, read_only); source is a volume name or a host path
    volumes: list[tuple[str, str, bool]]
    #: (published host port, container port)
    ports: list[tuple[int, int]]
    profiles: list[str]
    image: Image | None
    image_name: str | None


def _instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    result = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def _exec_form(rest: str) -> list[str]:
    return list(json.loads(rest)) if rest.startswith("[") else ["/bin/sh", "-c", rest]


def read_dockerfile(path: Path, context: Path) -> Image:
    """The last stage of a Dockerfile: its ENV, WORKDIR, COPY, ENTRYPOINT and CMD."""
    if not path.is_file():
        raise ComposeError(f"{path} (a compose build) does not exist")
    env: dict[str, str] = {}
    workdir = "/"
    copies: dict[str, Path] = {}
    entrypoint: list[str] = []
    cmd: list[str] = []
    for word, rest in _instructions(path.read_text()):
        if word == "FROM":
            env, workdir, copies, entrypoint, cmd = {}, "/", {}, [], []
        elif word == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
        elif word == "WORKDIR":
            workdir = str(PurePosixPath(workdir) / rest)
        elif word == "COPY" and "--from" not in rest:
            *sources, dest = [p for p in shlex.split(rest) if not p.startswith("--")]
            target = PurePosixPath(workdir) / dest
            for source in sources:
                inside = target if len(sources) == 1 and not dest.endswith("/") else (
                    target / PurePosixPath(source).name)
                copies[str(inside)] = (context / source).resolve()
        elif word == "ENTRYPOINT":
            entrypoint = _exec_form(rest)
        elif word == "CMD":
            cmd = _exec_form(rest)
    return Image(path, env, workdir, copies, entrypoint, cmd)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _environment(raw: Any, env: Mapping[str, str]) -> dict[str, str]:
    if isinstance(raw, list):
        pairs = [item.split("=", 1) if "=" in item else [item, None] for item in raw]
        raw = dict(pairs)
    result: dict[str, str] = {}
    for key, value in (raw or {}).items():
        if value is None:  # "KEY" alone: the host's value, if any (compose)
            if key in env:
                result[key] = env[key]
            continue
        result[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return result


def _volume(item: Any) -> tuple[str, str, bool]:
    if isinstance(item, dict):
        return str(item.get("source", "")), str(item["target"]), bool(item.get("read_only"))
    parts = str(item).split(":")
    if len(parts) == 1:
        return "", parts[0], False
    return parts[0], parts[1], len(parts) > 2 and "ro" in parts[2].split(",")


def _port(item: Any) -> tuple[int, int]:
    parts = str(item).split(":")
    if len(parts) < 2:
        raise ComposeError(f"port {item!r}: the stack needs host:container")
    return int(parts[-2]), int(parts[-1].split("/")[0])


def load(path: Path, env: Mapping[str, str], *,
         deferred: frozenset[str] = frozenset()) -> dict[str, Service]:
    """Every service of the compose file, interpolated from ``env`` (+ its ``.env``).

    Raises ComposeError naming every required variable that is unset, as compose does
    before it starts anything.
    """
    path = Path(path).resolve()
    raw = yaml.safe_load(path.read_text()) or {}
    full_env = {**read_env_file(path.parent / ".env"), **env}
    missing: list[str] = []
    services_raw: dict[str, Any] = _walk(raw.get("services") or {}, full_env, missing,
                                         deferred)
    if missing:
        raise ComposeError(f"{path.name} needs these environment variables: "
                           + ", ".join(dict.fromkeys(missing)))
    result = {}
    for name in services_raw:
        spec = _resolve_extends(name, services_raw)
        result[name] = _service(name, spec, path.parent, full_env)
    return result


def _resolve_extends(name: str, services: dict[str, Any], seen: tuple[str, ...] = ()
                     ) -> dict[str, Any]:
    if name in seen:
        raise ComposeError(f"extends loop through {name}")
    spec = dict(services[name])
    base = spec.pop("extends", None)
    if base is None:
        return spec
    base_name = base if isinstance(base, str) else base.get("service")
    if base_name not in services or (isinstance(base, dict) and base.get("file")):
        raise ComposeError(f"{name}: extends {base!r} is not a service of this file")
    return _merge(_resolve_extends(base_name, services, (*seen, name)), spec)


def _service(name: str, spec: dict[str, Any], compose_dir: Path,
             env: Mapping[str, str]) -> Service:
    image = None
    build = spec.get("build")
    if build is not None:
        context = (compose_dir / (build if isinstance(build, str) else
                                  build.get("context", "."))).resolve()
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile",
                                                                           "Dockerfile")
        image = read_dockerfile(context / dockerfile, context)
    command = spec.get("command")
    if isinstance(command, str):
        command = shlex.split(command)
    if command is None:
        command = list(image.cmd) if image else []
    return Service(
        name=name,
        command=[str(part) for part in command],
        environment=_environment(spec.get("environment"), env),
        volumes=[_volume(v) for v in spec.get("volumes") or []],
        ports=[_port(p) for p in spec.get("ports") or []],
        profiles=list(spec.get("profiles") or []),
        image=image,
        image_name=spec.get("image"),
    )
