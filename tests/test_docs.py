"""Documentation that repeats the code is checked against it (as datasette's test_docs does)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from optspec.plugins import hookspecs

ROOT = Path(__file__).resolve().parent.parent
ROW = re.compile(
    r"^\| `(?P<hook>\w+)` \| (?P<where>[^|]+) \| (?P<first>[^|]+) \| (?P<args>[^|]+) \|"
)


def _documented_hooks() -> dict[str, dict[str, str]]:
    text = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    table = text.split("## Hooks", 1)[1].split("\n## ", 1)[0]
    return {m["hook"]: m.groupdict() for line in table.splitlines() if (m := ROW.match(line))}


def _specs() -> dict[str, object]:
    return {
        name: function
        for name, function in vars(hookspecs).items()
        if callable(function) and hasattr(function, "optspec_spec")
    }


def test_docs_hook_table_lists_every_hook_and_no_other() -> None:
    assert list(_documented_hooks()) == list(_specs())


def test_docs_hook_table_gives_each_hooks_arguments_and_firstresult() -> None:
    documented = _documented_hooks()
    for name, function in _specs().items():
        arguments = list(inspect.signature(function).parameters)  # type: ignore[arg-type]
        assert re.findall(r"`(\w+)`", documented[name]["args"]) == arguments, name
        firstresult = function.optspec_spec.get("firstresult", False)  # type: ignore[attr-defined]
        assert documented[name]["first"].strip().startswith("yes" if firstresult else "no"), name


def test_docs_name_the_hook_reference_where_it_is() -> None:
    text = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    for link in re.findall(r"\]\(\.\./([^)]+)\)", text):
        assert (ROOT / link).exists(), link
