"""The module graph stays a hierarchy: no import cycles anywhere in the platform's own
packages (function-local imports count, since they are cycles postponed, not avoided),
and service modules import each other only at the top of the module, so the order
between them can be read off their headers.  Services react to each other through
domain events (``annotations.events``, reactions in ``annotations.handlers``)."""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("annotations", "training", "ml_backend", "cxr_platform", "webapp")
SERVICES = "annotations.services"


def module_files(root: Path = ROOT, packages: Iterable[str] = PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, migrations left out (Django orders those itself)."""
    out = {}
    for package in packages:
        for path in (root / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(root).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


def _imported(module: str, path: Path, node: ast.Import | ast.ImportFrom,
              known: dict[str, Path]) -> list[str]:
    """The first-party modules an import statement loads (``from a import b`` is
    module ``a.b`` when that is a module, else ``a``)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = module.split(".")
        if path.name != "__init__.py":
            base = base[:-1]
        if node.level:
            base = base[:len(base) - (node.level - 1)]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module or ""
        names = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in known else prefix
                 for a in node.names]
    out = []
    for name in names:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name and name != module:
            out.append(name)
    return out


def import_graph(files: dict[str, Path]) -> tuple[dict[str, set[str]], list[tuple[str, str, int]]]:
    """Edges of every import (module level or not), and the function-local ones as
    (importer, imported, line)."""
    edges: dict[str, set[str]] = {m: set() for m in files}
    local: list[tuple[str, str, int]] = []
    for module, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        top = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                targets = _imported(module, path, node, files)
                edges[module].update(targets)
                if id(node) not in top and not _type_checking_only(tree, node):
                    local.extend((module, t, node.lineno) for t in targets)
    return edges, local


def _type_checking_only(tree: ast.Module, node: ast.AST) -> bool:
    """Imports under ``if TYPE_CHECKING:`` at module level are never executed."""
    for stmt in tree.body:
        if isinstance(stmt, ast.If) and "TYPE_CHECKING" in ast.unparse(stmt.test):
            if any(n is node for n in ast.walk(stmt)):
                return True
    return False


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative so a
    deep graph cannot hit the recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycle_in_the_platform():
    edges, _ = import_graph(module_files())
    found = cycles(edges)
    detail = "\n".join(
        f"cycle: {' <-> '.join(c)}\n" + "\n".join(
            f"    {m} imports {sorted(e for e in edges[m] if e in c)}" for m in c)
        for c in found)
    assert found == [], detail


def test_services_never_import_each_other_inside_functions():
    _, local = import_graph(module_files())
    offenders = [f"{a} line {line} imports {b}" for a, b, line in local
                 if a.startswith(SERVICES + ".") and b.startswith(SERVICES + ".")]
    assert offenders == [], "\n".join(offenders)


def test_services_never_import_tasks_or_handlers():
    edges, _ = import_graph(module_files())
    offenders = sorted(f"{m} imports {t}" for m, ts in edges.items() if m.startswith(SERVICES)
                       for t in ts if t in ("annotations.tasks", "annotations.handlers"))
    assert offenders == []


def test_the_checker_finds_a_cycle_made_through_a_function_local_import(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg import b\n")
    (pkg / "b.py").write_text("def f():\n    from pkg.c import g\n    return g\n")
    (pkg / "c.py").write_text("from . import a\ndef g():\n    return a\n")
    (pkg / "d.py").write_text("from typing import TYPE_CHECKING\n"
                              "if TYPE_CHECKING:\n    from pkg import a\n")
    edges, local = import_graph(module_files(tmp_path, ["pkg"]))
    assert cycles(edges) == [["pkg.a", "pkg.b", "pkg.c"]]
    assert local == [("pkg.b", "pkg.c", 2)]
    assert cycles({"x": {"y"}, "y": set()}) == []
