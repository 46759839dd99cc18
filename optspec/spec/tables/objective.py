"""``[objective]``: a ``callable``, a ``command``, or a plugin's ``kind``.

The only checker of the built-in kinds' tables. The objective factories in
:mod:`optspec.objectives` resolve what this module accepted (import the module, find the
executable) and do not check the table's shape again.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from typing import Any

from optspec.spec.model import ObjectiveSection, Param
from optspec.spec.tables.checker import Checker, describe, join

OBJECTIVE_KEYS = ("callable", "args", "command", "cwd", "env", "kind")
# Placeholders a command may use besides the parameters themselves; {python} is the interpreter
# optspec runs on, so a spec need not guess whether "python" or "python3" is on PATH.
COMMAND_FIELDS = ("trial_number", "trial_dir", "python", "worker", "device")

_IDENTIFIER_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def check_objective(c: Checker, value: Any, params: tuple[Param, ...]) -> ObjectiveSection:
    if value is None:
        c.add(
            "objective",
            'missing; add [objective] with callable = "pkg.module:function" '
            'or command = ["python", "train.py"]',
        )
        return ObjectiveSection("python", {})
    if not isinstance(value, dict):
        c.table(value, "objective", None)
        return ObjectiveSection("python", {})
    table = value
    kind = c.get(
        table,
        "kind",
        "objective",
        lambda v: isinstance(v, str) and v != "",
        "the name of an objective kind",
    )
    given = [key for key in ("callable", "command") if key in table]
    if len(given) == 2:
        c.add("objective", "callable and command are exclusive; give one of them")
    if kind is None and not given:
        # A misspelt `callable` is the likely cause: name it before the general advice.
        c.table(table, "objective", OBJECTIVE_KEYS)
        c.add(
            "objective",
            'give exactly one of callable = "pkg.module:function", '
            'command = ["python", "train.py"], or kind = "NAME" of a plugin\'s objective',
        )
        return ObjectiveSection("python", {})
    kind = kind or given[0].replace("callable", "python")
    if kind not in ("python", "command"):
        # A plugin's kind: its factory validates the table when the run starts.
        return ObjectiveSection(kind, dict(table))
    c.table(table, "objective", OBJECTIVE_KEYS)
    if kind == "python":
        _python(c, table, params)
    else:
        _command(c, table, params)
    return ObjectiveSection(kind, dict(table))


def _python(c: Checker, table: Mapping[str, Any], params: tuple[Param, ...]) -> None:
    ref = c.get(
        table,
        "callable",
        "objective",
        lambda v: isinstance(v, str),
        '"pkg.module:function" or "path/to/file.py:function"',
        required=True,
    )
    if ref is not None:
        _reference(c, ref, "objective.callable")
    args = c.get(
        table,
        "args",
        "objective",
        lambda v: isinstance(v, dict),
        "a table of keyword arguments",
        {},
    )
    declared = {param.name for param in params}
    for key in args:
        if key in declared:
            # The callable receives declared parameters by name: which value would win?
            c.add(
                join("objective.args", key),
                f"{key!r} is also declared as params.{key}; the callable receives "
                "parameters by name, so rename one of them",
            )
    for key in ("cwd", "env"):
        if key in table:
            c.add(join("objective", key), "applies to command objectives only")


def _reference(c: Checker, ref: str, path: str) -> None:
    module, sep, attr = ref.rpartition(":")
    if not sep or not module or not _IDENTIFIER_PATH.match(attr):
        c.add(path, f'{ref!r} is not "pkg.module:function" or "path/to/file.py:function"')
    elif module.endswith(".py"):
        if not (c.path.parent / module).is_file():
            c.add(path, f"no file {module!r} next to the spec (looked in {c.path.parent})")
    elif not _IDENTIFIER_PATH.match(module):
        c.add(path, f"{module!r} is not a module name like pkg.module, nor a .py file")


def _command(c: Checker, table: Mapping[str, Any], params: tuple[Param, ...]) -> None:
    command = table.get("command")
    if "callable" in table and "command" not in table:
        c.add(
            "objective.callable",
            'applies to kind = "python" only; a command objective runs objective.command',
        )
    if command is None:
        c.add(
            "objective.command",
            'missing; expected an argv array like ["python", "train.py", "--lr", "{lr}"]',
        )
    elif isinstance(command, str):
        c.add(
            "objective.command",
            'must be an argv array like ["python", "train.py", "--lr", '
            '"{lr}"], never a shell string',
        )
    elif not isinstance(command, list) or not command:
        c.add(
            "objective.command",
            f"must be a non-empty array of strings, got {describe(command)}",
        )
    else:
        names = {param.name for param in params} | set(COMMAND_FIELDS)
        for index, element in enumerate(command):
            _command_element(c, element, f"objective.command[{index}]", names)
    c.get(table, "cwd", "objective", lambda v: isinstance(v, str), "a directory path (a string)")
    env = c.get(table, "env", "objective", lambda v: isinstance(v, dict), "a table of strings", {})
    for key, value in env.items():
        if not isinstance(value, str):
            c.add(join("objective.env", key), f"must be a string, got {describe(value)}")
    if "args" in table:
        c.add("objective.args", "applies to callable objectives only; pass values in command")


def _command_element(c: Checker, element: Any, path: str, names: set[str]) -> None:
    if not isinstance(element, str):
        c.add(path, f"must be a string, got {describe(element)}")
        return
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(element) if name is not None]
    except ValueError as exc:
        c.add(path, f"{exc}; write {{{{ and }}}} for literal braces")
        return
    valid = ", ".join(sorted(names))
    for name in fields:
        if re.split(r"[.\[]", name, maxsplit=1)[0] != name:
            # str.format would look up an attribute or an item of the value: every trial would
            # fail with a reason that never mentions the spec.
            c.add(
                path,
                f"placeholder {{{name}}}: attribute and index access are not supported; "
                f"write a plain name ({valid})",
            )
        elif name not in names:
            c.add(path, f"placeholder {{{name}}} names no parameter; valid: {valid}")
