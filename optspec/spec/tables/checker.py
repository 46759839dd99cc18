"""What every table checker uses: a :class:`Checker` collecting ``path: message`` problems.

A checker never stops at the first problem: each check records one and carries on with a usable
default, so a user fixing a spec sees everything that is wrong in one go. Messages say what would
be valid.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from optspec.spec.durations import parse_duration
from optspec.util import closest


def describe(value: Any) -> str:
    """How a wrong value reads in a message: its TOML type and the value itself."""
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the float {value}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return f"a {type(value).__name__}"


def join(path: str, key: str | int) -> str:
    """``path`` extended by a key (quoted when TOML needs it) or an array index."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    if not re.fullmatch(r"[A-Za-z0-9_-]+", key):
        key = f'"{key}"'
    return f"{path}.{key}" if path else key


def choices_text(choices: Iterable[Any]) -> str:
    return ", ".join(repr(choice) for choice in choices)


class Checker:
    """The problems found so far, each a ``(toml path, message)`` pair, and typed getters.

    ``path`` is the spec file: relative references (``file.py:attr``, ``output``) resolve from
    its directory.
    """

    def __init__(self, path: Path, overridden: Iterable[str] = ()) -> None:
        self.path = path
        self.problems: list[tuple[str, str]] = []
        # TOML paths set by --set: a hint for one names the whole key, as the user types it.
        self.overridden = frozenset(overridden)

    def add(self, path: str, message: str) -> None:
        self.problems.append((path, message))

    def table(self, value: Any, path: str, known: Iterable[str] | None) -> dict[str, Any]:
        """``value`` as a table, reporting a non-table and every key outside ``known``."""
        if not isinstance(value, dict):
            self.add(path, f"must be a table, got {describe(value)}")
            return {}
        if known is not None:
            known = tuple(known)
            for key in value:
                if key not in known:
                    self.unknown_key(path, key, known)
        return value

    def unknown_key(self, table: str, key: str, known: tuple[str, ...]) -> None:
        path = join(table, key)
        close = closest(key, known)
        if close is not None and path in self.overridden:
            close = join(table, close)
        hint = f"did you mean {close!r}? " if close is not None else ""
        self.add(path, f"unknown key; {hint}valid keys here: {', '.join(known)}")

    def get(
        self,
        table: Mapping[str, Any],
        key: str,
        path: str,
        check: Callable[[Any], bool],
        expected: str,
        default: Any = None,
        *,
        required: bool = False,
    ) -> Any:
        where = join(path, key)
        if key not in table:
            if required:
                self.add(where, f"missing; expected {expected}")
            return default
        value = table[key]
        if not check(value):
            self.add(where, f"must be {expected}, got {describe(value)}")
            return default
        return value

    def metric(self, table: Mapping[str, Any], path: str) -> str | None:
        """The required ``metric`` key of [[study.objectives]] and [[constraints]] entries."""
        metric: str | None = self.get(
            table,
            "metric",
            path,
            lambda v: isinstance(v, str) and v != "",
            "the name of a metric in the objective's result",
            required=True,
        )
        return metric

    def string_list(self, table: Mapping[str, Any], key: str, path: str) -> tuple[str, ...]:
        value = self.get(table, key, path, lambda v: isinstance(v, list), "an array of strings", [])
        good = []
        for index, item in enumerate(value):
            if isinstance(item, str) and item:
                good.append(item)
            else:
                self.add(
                    join(join(path, key), index),
                    f"must be a non-empty string, got {describe(item)}",
                )
        return tuple(good)

    def duration(
        self, table: Mapping[str, Any], key: str, path: str, default: float | None
    ) -> float | None:
        if key not in table:
            return default
        try:
            return parse_duration(table[key])
        except ValueError as exc:
            self.add(join(path, key), f"{exc}, got {describe(table[key])}")
            return default
