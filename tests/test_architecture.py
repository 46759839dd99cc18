"""The layout rules, checked on the source: no import cycles, built-ins use the public API only.

Imports are read with ``ast`` from every module of ``optspec/``, those inside functions included
(they run sooner or later), ``if TYPE_CHECKING:`` blocks excluded (they never run). The facade,
``optspec/__init__.py``, is set aside: it re-exports names from everywhere, lazily, and every
module may import ``optspec`` for them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import optspec

PACKAGE = Path(optspec.__file__).parent
FACADE = "optspec"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, module: str, is_package: bool, modules: set[str]) -> set[str]:
    """The optspec modules ``module`` imports at run time (resolved: ``from optspec.run import
    setup`` is ``optspec.run.setup``; ``from optspec.run.setup import X`` is
    ``optspec.run.setup``)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module if is_package else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{node.module}" if node.module else package
            else:
                base = node.module or ""
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in modules else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {name for name in found if name == FACADE or name.startswith(FACADE + ".")}


def _graph() -> dict[str, set[str]]:
    paths = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    modules = set(paths)
    graph = {}
    for name, path in paths.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        imported = _imports(tree, name, path.name == "__init__.py", modules)
        # Importing a module also imports its packages' __init__ (all empty but the facade).
        graph[name] = {target for target in imported if target in modules} - {name}
    return graph


GRAPH = _graph()


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each strongly connected component of more than one module (Tarjan), as a path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return components


def test_the_graph_sees_imports_inside_functions_and_skips_type_checking_blocks() -> None:
    # run/lifecycle.py imports the controller inside a function; plugins/hookspecs.py imports
    # Config only for type checking.
    assert "optspec.run.controller" in GRAPH["optspec.run.lifecycle"]
    assert "optspec.config" not in GRAPH["optspec.plugins.hookspecs"]


def test_no_import_cycle_between_optspec_modules() -> None:
    graph = {name: targets - {FACADE} for name, targets in GRAPH.items() if name != FACADE}
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_hidden_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


@pytest.mark.parametrize("module", sorted(name for name in GRAPH if ".builtin." in name))
def test_builtin_plugins_import_only_the_public_api(module: str) -> None:
    assert GRAPH[module] - {FACADE} == set(), (
        f"{module} is a plugin like any other: it may import `optspec` only "
        "(export what it needs from optspec/__init__.py)"
    )


def test_test_modules_share_helpers_through_tests_helpers_not_each_other() -> None:
    tests = Path(__file__).parent
    offenders = []
    for path in sorted(tests.glob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            module = getattr(node, "module", None) or ""
            if module.startswith("tests.test_") and module != f"tests.{path.stem}":
                offenders.append(f"{path.name} imports {module}")
    assert offenders == [], "move shared helpers to tests/helpers.py or tests/conftest.py"
