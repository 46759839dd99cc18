"""``[study]``: name, direction(s) or ``[[study.objectives]]``, seed, output."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from optspec.spec.model import DIRECTIONS, StudyObjective, StudySection
from optspec.spec.tables.checker import Checker, describe
from optspec.util import is_int

STUDY_KEYS = ("name", "direction", "directions", "objectives", "seed", "output")
_DIRECTION = '"minimize" or "maximize"'
MAX_NAME_LENGTH = 128
"""A study name is also the default output directory's name: file systems stop at 255 bytes."""


def _name_problem(name: str) -> str | None:
    shown = repr(name) if len(name) <= 40 else f"{name[:40]!r}..."
    if len(name) > MAX_NAME_LENGTH:
        return f"{shown} is {len(name)} characters long; at most {MAX_NAME_LENGTH}"
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in name):
        # A NUL cannot be in a file name: the study ran, and then nothing could be saved.
        return f"{shown} holds a control character"
    if "/" in name or "\\" in name or name in (".", ".."):
        return f"{shown} cannot name a directory"
    return None


def check_study(c: Checker, value: Any) -> StudySection:
    table = c.table(value, "study", STUDY_KEYS)
    name = c.get(
        table,
        "name",
        "study",
        lambda v: isinstance(v, str) and v.strip() != "",
        "a non-empty string",
        c.path.stem,
    )
    problem = _name_problem(name) if isinstance(name, str) else None
    if problem:
        c.add("study.name", f"{problem}; use letters, digits, - and _")
        name = c.path.stem
    seed = c.get(
        table,
        "seed",
        "study",
        lambda v: is_int(v) and 0 <= v < 2**32,
        "an integer from 0 to 4294967295",
    )
    output = c.get(
        table,
        "output",
        "study",
        lambda v: isinstance(v, str) and v != "",
        "a directory path (a string)",
    )
    output_dir = (
        (c.path.parent / output).resolve() if output else Path.cwd() / "optspec-runs" / name
    )
    return StudySection(name=name, objectives=_objectives(c, table), seed=seed, output=output_dir)


def _objectives(c: Checker, table: Mapping[str, Any]) -> tuple[StudyObjective, ...]:
    given = [key for key in ("direction", "directions", "objectives") if key in table]
    if len(given) > 1:
        c.add("study", f"{' and '.join(given)} are exclusive; give one of them")
    if "directions" in table:
        directions = c.get(
            table,
            "directions",
            "study",
            lambda v: isinstance(v, list) and v != [],
            f"a non-empty array of {_DIRECTION}",
            [],
        )
        for index, direction in enumerate(directions):
            if direction not in DIRECTIONS:
                c.add(
                    f"study.directions[{index}]",
                    f"must be {_DIRECTION}, got {describe(direction)}",
                )
        return tuple(StudyObjective(d) for d in directions if d in DIRECTIONS) or (
            StudyObjective("minimize"),
        )
    if "objectives" in table:
        return _metric_objectives(c, table["objectives"])
    direction = c.get(
        table, "direction", "study", lambda v: v in DIRECTIONS, _DIRECTION, "minimize"
    )
    return (StudyObjective(direction),)


def _metric_objectives(c: Checker, value: Any) -> tuple[StudyObjective, ...]:
    if not isinstance(value, list) or not value:
        c.add(
            "study.objectives",
            f"must be an array of tables ([[study.objectives]]), got {describe(value)}",
        )
        return (StudyObjective("minimize"),)
    objectives = []
    for index, item in enumerate(value):
        path = f"study.objectives[{index}]"
        table = c.table(item, path, ("metric", "direction"))
        metric = c.metric(table, path)
        direction = c.get(
            table, "direction", path, lambda v: v in DIRECTIONS, _DIRECTION, required=True
        )
        if metric and direction:
            objectives.append(StudyObjective(direction, metric))
    metrics = [objective.metric for objective in objectives]
    for metric in {m for m in metrics if metrics.count(m) > 1}:
        c.add("study.objectives", f"metric {metric!r} is named twice")
    return tuple(objectives) or (StudyObjective("minimize"),)
