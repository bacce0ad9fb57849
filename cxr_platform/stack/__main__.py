"""``python -m cxr_platform.stack up | down | status | secrets`` (``scripts/stack``).

``up`` starts compose's services as local processes in the background and returns once
all are ready; ``down`` stops them (from any shell: it reads ``<root>/stack.json``);
``status`` lists them; ``secrets`` prints fresh random values for every secret compose
requires, in ``.env`` form (``scripts/stack secrets > docker/.env``).
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
from pathlib import Path

from cxr_platform.stack.api import REPO, Stack, StackError, down_from_state, status_from_state

DEFAULT_ROOT = REPO / "var" / "stack"
#: compose's required secrets (``${VAR:?...}``) and how long each is
SECRETS = {"CXR_SECRET_KEY": 48, "CXR_PSEUDONYM_KEY": 48,
           "CXR_LABEL_STUDIO_WEBHOOK_SECRET": 40, "CXR_LABEL_STUDIO_BRIDGE_SECRET": 40,
           "CXR_TRAIN_JOIN_SECRET": 40,
           "CXR_LABEL_STUDIO_TOKEN": 0, "CXR_ML_BACKEND_PASSWORD": 24,
           "CXR_LABEL_STUDIO_ADMIN_PASSWORD": 18, "POSTGRES_PASSWORD": 18}


def fresh_secrets() -> dict[str, str]:
    """Random values for compose's secrets (the Label Studio token: 40 hex, its limit)."""
    values = {k: secrets.token_urlsafe(n) for k, n in SECRETS.items() if n}
    values["CXR_LABEL_STUDIO_TOKEN"] = secrets.token_hex(20)
    values["CXR_LABEL_STUDIO_ADMIN_EMAIL"] = "admin@example.org"
    return values


def _up(args: argparse.Namespace) -> int:
    began = time.monotonic()
    ports = {"redis": int(os.environ.get("CXR_STACK_REDIS_PORT", "6380"))} if (
        args.redis == "own") else {}
    stack = Stack(args.root, env=os.environ, redis=args.redis, ports=ports)
    for name, why in stack.plan().skipped.items():
        print(f"skipped {name}: {why}")  # noqa: T201
    stack.up()
    for name in stack.services:
        port = stack.process(name).port
        where = stack.url(name) if port else ""
        print(f"{name:16} pid {stack.pid(name):<8} {where}")  # noqa: T201
    print(f"stack up in {time.monotonic() - began:.1f} s; logs in {stack.root / 'logs'}; "  # noqa: T201
          "scripts/stack down stops it")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/stack", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("up", "down", "status", "secrets"))
    parser.add_argument("--root", type=Path, default=Path(os.environ.get(
        "CXR_STACK_ROOT", DEFAULT_ROOT)), help="the stack's folder (default var/stack)")
    parser.add_argument("--redis", choices=("shared", "own"), default="shared",
                        help="this machine's Redis (databases 13/14) or a redis-server of "
                             "the stack's own (port $CXR_STACK_REDIS_PORT)")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            return _up(args)
        if args.command == "down":
            stopped = down_from_state(args.root)
            print(f"stopped {', '.join(stopped) or 'nothing'}")  # noqa: T201
            return 0
        if args.command == "status":
            rows = status_from_state(args.root)
            for name, info in rows.items():
                state = "up" if info["alive"] else "DEAD"
                print(f"{name:16} {state:5} pid {info['pid']:<8} {info.get('url') or ''}")  # noqa: T201
            if not rows:
                print("no stack running in", args.root)  # noqa: T201
            return 0 if rows and all(i["alive"] for i in rows.values()) else 1
        for key, value in fresh_secrets().items():
            print(f"{key}={value}")  # noqa: T201
        return 0
    except StackError as exc:
        print(f"scripts/stack: {exc}", file=sys.stderr)  # noqa: T201
        return 2


if __name__ == "__main__":
    sys.exit(main())
