"""The seam to Optuna's private names: one module, pinned to the releases it was checked against."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import optuna

from optspec.storage import optuna_compat

PACKAGE = Path(__file__).resolve().parent.parent / "optspec"
COMPAT = PACKAGE / "storage" / "optuna_compat.py"


def test_installed_optuna_is_a_release_the_compat_module_was_checked_against() -> None:
    installed = ".".join(optuna.__version__.split(".")[:2])
    assert installed in optuna_compat.CHECKED_VERSIONS, (
        f"optuna {optuna.__version__} is installed, but optspec/storage/optuna_compat.py was "
        f"checked against {optuna_compat.CHECKED_VERSIONS}: read each private use again"
    )


@functools.cache
def _optuna_private_names() -> frozenset[str]:
    """Every underscore name Optuna defines on its objects: ``self._x = ...`` and ``def _x``."""
    names: set[str] = set()
    for path in Path(optuna.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_bytes())):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                if isinstance(node.value, ast.Name) and node.value.id == "self":
                    names.add(node.attr)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names.add(node.name)
    return frozenset(name for name in names if name.startswith("_") and not name.endswith("__"))


def _private_optuna_uses(path: Path) -> list[str]:
    """Imports from Optuna's private modules, and reads of Optuna's private names off anything
    but ``self``/``cls`` (optspec's own objects may share a name, like ``self._backend``)."""
    private = _optuna_private_names()
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("optuna"):
            if any(part.startswith("_") for part in node.module.split(".")):  # type: ignore[union-attr]
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: from {node.module}")
        elif isinstance(node, ast.Attribute) and node.attr in private:
            if isinstance(node.value, ast.Name) and node.value.id in {"self", "cls"}:
                continue
            found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: .{node.attr}")
    return found


def test_no_optuna_private_name_is_used_outside_the_compat_module() -> None:
    uses = [
        use
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != COMPAT
        for use in _private_optuna_uses(path)
    ]
    assert uses == [], "move these into optspec/storage/optuna_compat.py"


def test_the_check_finds_a_private_use() -> None:
    # Guards the guard: a reading that returned nothing would make the test above pass always.
    assert _private_optuna_uses(COMPAT)
