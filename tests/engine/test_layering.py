"""Imports point down only: the engine (``shared/tq``) is a library that knows nothing of the code
that uses it. Read from the source (ast), so an import hidden inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import tq

ENGINE = Path(tq.__file__).resolve().parent
USERS = ("tq_services", "tq_operator", "tq_cli")  # the families and admin, the operator, the command line


def imported_modules(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
            "import_module",
            "__import__",
        ):  # importlib.import_module("tq_services...") is an import too
            for arg in node.args[:1]:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    found.append((node.lineno, arg.value))
    return found


def test_the_engine_imports_none_of_its_users() -> None:
    sources = sorted(ENGINE.rglob("*.py"))
    assert len(sources) > 10, f"the engine's sources were not found under {ENGINE}"
    upward = [
        f"{path.relative_to(ENGINE.parent)}:{line} imports {module}"
        for path in sources
        for line, module in imported_modules(path)
        if module.split(".")[0] in USERS
    ]
    assert not upward, "the engine imports code above it:\n" + "\n".join(upward)


def test_the_walk_sees_an_import_inside_a_function(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "def f():\n    from tq_services import load_handlers\n"
        "    import importlib\n    importlib.import_module('tq_operator.main')\n"
    )
    assert [m for _, m in imported_modules(source)] == ["tq_services", "importlib", "tq_operator.main"]
