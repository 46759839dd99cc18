"""``--set KEY=VALUE``: one value of a spec changed from the command line.

KEY is a dotted TOML path (``run.n_trials``, ``params.lr.high``, ``constraints[0].max``), VALUE a
TOML value; a bare word that is not TOML is a string (``--set sampler.name=random``). Overrides
change the TOML document before it is checked, so they meet exactly the checks, paths and hints a
file does, and an error names the ``--set KEY`` it came from. ``--n-trials``, ``--timeout`` and
``--workers`` are shorthands for ``--set run.KEY=...`` and are recorded the same way.

The spec a study records is the effective one: the file's text when nothing was overridden, else
the overridden document written as TOML (the same text for the same file and overrides), headed by
a comment listing the overrides. ``resume`` reads it back, so it continues with every override.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

from attrs import frozen

from optspec.errors import UsageError
from optspec.spec.dump import toml_inline
from optspec.spec.tables.checker import describe, join
from optspec.util import tomllib

Segment = str | int


@frozen
class Override:
    """One ``KEY=VALUE``: where it goes, the value, and how messages and study.db name it."""

    key: tuple[Segment, ...]
    value: Any
    text: str
    """``KEY=VALUE`` as recorded in study.db (``optspec:overrides``) and applied again later."""
    label: str
    """How an error names it: ``--set run.n_trials`` or ``--n-trials 40``."""

    @property
    def path(self) -> str:
        """KEY as the checkers spell TOML paths, so their problems can be traced back to it."""
        path = ""
        for segment in self.key:
            path = join(path, segment)
        return path


def parse_override(text: str) -> Override:
    """``"KEY=VALUE"`` as an :class:`Override`; UsageError naming ``--set`` when malformed."""
    key_text, sep, value_text = text.partition("=")
    if not sep:
        raise UsageError(
            f"--set {text}: expected KEY=VALUE with KEY a dotted TOML path, like "
            "--set run.n_trials=50 or --set params.lr.high=0.5"
        )
    key_text = key_text.strip()
    try:
        key = _parse_key(key_text)
    except ValueError as exc:
        raise UsageError(
            f"--set {key_text}: {exc}; KEY is a dotted TOML path like params.lr.high"
        ) from None
    return Override(key, _parse_value(value_text), text, f"--set {key_text}")


def shorthand_overrides(
    *,
    n_trials: int | None = None,
    timeout: float | str | None = None,
    workers: int | str | None = None,
) -> list[Override]:
    """``--n-trials``, ``--timeout`` and ``--workers`` as the overrides they stand for.

    ``timeout`` may be infinite (``--timeout off``): it lifts a timeout the spec sets.
    """
    if isinstance(timeout, float) and math.isinf(timeout):
        timeout = "off"
    given: list[tuple[str, str, Any]] = [
        ("n_trials", "--n-trials", n_trials),
        ("timeout", "--timeout", timeout),
        ("workers", "--workers", workers),
    ]
    return [
        Override(("run", key), value, f"run.{key}={toml_inline(value)}", f"{flag} {value}")
        for key, flag, value in given
        if value is not None
    ]


def as_overrides(overrides: Iterable[str | Override]) -> list[Override]:
    return [o if isinstance(o, Override) else parse_override(o) for o in overrides]


def apply_overrides(
    data: dict[str, Any], overrides: Sequence[Override]
) -> tuple[list[tuple[str, str]], set[str]]:
    """Set each override in ``data`` (in place), in order.

    Returns the problems (``(--set KEY, message)``) of overrides that cannot be placed, and the
    TOML paths of the tables they created, so that a problem found inside one (a new
    ``params.lr`` lacking its ``type``) is traced to its ``--set``.
    """
    problems: list[tuple[str, str]] = []
    created: set[str] = set()
    for override in overrides:
        problem = _place(data, override, created)
        if problem is not None:
            problems.append((override.label, problem))
    return problems, created


def _place(data: dict[str, Any], override: Override, created: set[str]) -> str | None:
    node: Any = data
    path = ""
    for segment, following in zip(override.key, override.key[1:], strict=False):
        if isinstance(segment, int):
            if segment >= len(node):
                return f"{path} has {len(node)} entries; no index {segment}"
            child = node[segment]
        elif segment not in node:
            if isinstance(following, int):
                return f"{join(path, segment)} does not exist; an array needs its entries first"
            child = node[segment] = {}
            created.add(join(path, segment))
        else:
            child = node[segment]
        path = join(path, segment)
        if isinstance(following, int) and not isinstance(child, list):
            return f"{path} is {describe(child)}, not an array; remove [{following}]"
        if isinstance(following, str) and not isinstance(child, dict):
            return f"{path} is {describe(child)}, not a table with keys"
        node = child
    last = override.key[-1]
    if isinstance(last, int) and last >= len(node):
        return f"{path} has {len(node)} entries; no index {last}"
    node[last] = override.value
    return None


def trace(
    problems: Iterable[tuple[str, str]],
    overrides: Sequence[Override],
    created: set[str],
    file_problems: Iterable[tuple[str, str]] = (),
) -> list[str]:
    """Problem lines, each naming the ``--set`` it comes from where there is one.

    A problem at an override's path reads ``--set KEY: message``; one inside a table an override
    made, ``--set KEY: path: message``; one the file alone does not have (``low`` above a new
    ``high``) ends with ``(with --set ...)``.
    """
    own = set(file_problems)
    lines = []
    for path, message in problems:
        origin = _origin(path, overrides, created)
        if origin is not None and path == origin.path:
            lines.append(f"{origin.label}: {message}")
        elif origin is not None:
            lines.append(f"{origin.label}: {path}: {message}")
        elif overrides and (path, message) not in own:
            given = ", ".join(f"--set {override.text}" for override in overrides)
            lines.append(f"{path}: {message} (with {given})")
        else:
            lines.append(f"{path}: {message}" if path else message)
    return lines


def _origin(path: str, overrides: Sequence[Override], created: set[str]) -> Override | None:
    for override in reversed(overrides):  # the last override of a path is the one in effect
        roots = [override.path, *(c for c in created if _within(override.path, c))]
        if any(_within(path, root) for root in roots):
            return override
    return None


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith((root + ".", root + "["))


def header(file_name: str, overrides: Sequence[str]) -> str:
    """The comment heading an effective spec: what it was made from."""
    lines = [f"# The spec this study runs: {file_name} with these overrides."]
    lines += [f"#   --set {override}" for override in overrides]
    return "\n".join(lines) + "\n\n"


# -- KEY and VALUE ------------------------------------------------------------------------------

_BARE = re.compile(r"[A-Za-z0-9_-]+")
_QUOTED = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'[^\'\n]*\'')
_INDEX = re.compile(r"\[(\d+)\]")


def _parse_key(text: str) -> tuple[Segment, ...]:
    """``params."my lr".high`` or ``constraints[0].max`` as its segments."""
    segments: list[Segment] = []
    position = 0
    while True:
        match = _BARE.match(text, position) or _QUOTED.match(text, position)
        if match is None:
            raise ValueError(f"no key at {text[position:]!r}" if text[position:] else "empty key")
        word = match[0]
        segments.append(tomllib.loads(f"k = {word}")["k"] if word[0] in "\"'" else word)
        position = match.end()
        while index := _INDEX.match(text, position):
            segments.append(int(index[1]))
            position = index.end()
        if position == len(text):
            return tuple(segments)
        if text[position] != ".":
            raise ValueError(f"unexpected {text[position:]!r}")
        position += 1


def _parse_value(text: str) -> Any:
    """A TOML value, or the text itself as a string when it is not one (``random``, ``10m``)."""
    try:
        document = tomllib.loads(f"v = {text}")
    except tomllib.TOMLDecodeError:
        return text
    # "1\nx = 2" parses, as two keys: that is not one value.
    return document["v"] if list(document) == ["v"] else text
