"""No import cycles among the modules of tq's packages (the engine ``tq``, the families and admin
``tq_services``, the operator ``tq_operator``, the command line ``tq_cli``): each module has one job
and its imports point one way. Read from the source (ast), so every import counts: at module level,
inside a function, and under ``if TYPE_CHECKING`` (a cycle there is still two modules that each
need the other)."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

PACKAGES = ("tq", "tq_services", "tq_operator", "tq_cli")


def modules(packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Every module of ``packages``: dotted name -> source file (a package is its ``__init__``)."""
    found: dict[str, Path] = {}
    for package in packages:
        spec = importlib.util.find_spec(package)
        assert spec is not None and spec.submodule_search_locations, f"package {package} not found"
        root = Path(next(iter(spec.submodule_search_locations))).resolve()
        for path in sorted(root.rglob("*.py")):
            parts = [package, *path.relative_to(root).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, found: set[str]) -> set[str]:
    """The modules of ``found`` one import statement loads: each named submodule, else the module
    (or package) a name is taken from."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names} & found
    base = node.module or ""
    if node.level:  # relative: from the module's own package, one level up per extra dot
        package = module.split(".") if is_package else module.split(".")[:-1]
        base = ".".join([*package[: len(package) - node.level + 1], *([base] if base else [])])
    names = {f"{base}.{alias.name}" if f"{base}.{alias.name}" in found else base for alias in node.names}
    return names & found


def import_graph(found: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the modules of ``found`` it imports."""
    graph: dict[str, set[str]] = {}
    for module, path in found.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges |= _imported(node, module, path.name == "__init__.py", set(found))
        edges.discard(module)
        graph[module] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def _path(graph: dict[str, set[str]], component: list[str]) -> str:
    """One shortest cycle through a component's first module, for the failure message."""
    members, start = set(component), component[0]
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        step = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    trail = [v]
                    while trail[-1] != start:
                        trail.append(came_from[trail[-1]])
                    return " -> ".join([*reversed(trail), start])
                if w not in came_from:
                    came_from[w] = v
                    step.append(w)
        frontier = step
    return " <-> ".join(component)


def test_no_import_cycles_in_any_package() -> None:
    found = modules()
    assert {"tq.jobs", "tq_services.admin.routes", "tq_operator.main", "tq_cli.main"} <= set(found)
    graph = import_graph(found)
    loops = cycles(graph)
    assert not loops, "import cycles:\n" + "\n".join(f"  {_path(graph, c)}" for c in loops)


def test_the_graph_sees_every_kind_of_import(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import c\n")
    (pkg / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.b import B\n"
    )
    (pkg / "b.py").write_text("def f():\n    import pkg.sub.c\n")
    (pkg / "sub" / "c.py").write_text("from ..a import thing\nfrom pkg import sub\n")
    found = {
        "pkg": pkg / "__init__.py",
        "pkg.sub": pkg / "sub" / "__init__.py",
        "pkg.a": pkg / "a.py",
        "pkg.b": pkg / "b.py",
        "pkg.sub.c": pkg / "sub" / "c.py",
    }
    graph = import_graph(found)
    assert graph == {
        "pkg": set(),
        "pkg.sub": {"pkg.sub.c"},
        "pkg.a": {"pkg.b"},
        "pkg.b": {"pkg.sub.c"},
        "pkg.sub.c": {"pkg.a", "pkg.sub"},
    }
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub", "pkg.sub.c"]]
