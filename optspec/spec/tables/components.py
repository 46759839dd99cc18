"""``[sampler]`` and ``[pruner]``: a registered name plus that component's keyword arguments.

Which options a sampler or pruner takes is checked against its factory's signature when the run
is set up (:mod:`optspec.plugins.factories`); only what needs the whole spec is checked here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from optspec.spec.model import Component, FloatParam, Param, StudySection
from optspec.spec.tables.checker import Checker, join


def check_component(c: Checker, data: Mapping[str, Any], key: str, default: str) -> Component:
    if key not in data:
        return Component(default)
    if not isinstance(data[key], dict):
        c.table(data[key], key, None)
        return Component(default)
    table = data[key]
    name = c.get(
        table,
        "name",
        key,
        lambda v: isinstance(v, str) and v != "",
        f"the name of a registered {key} (see `optspec plugins`)",
        default,
        required=True,
    )
    return Component(name, {k: v for k, v in table.items() if k != "name"})


def check_pruner(c: Checker, data: Mapping[str, Any], study: StudySection) -> Component:
    """Median by default; with several objectives no pruner, as Optuna refuses
    ``trial.report`` there (every trial that reported would fail)."""
    if len(study.directions) == 1:
        return check_component(c, data, "pruner", "median")
    pruner = check_component(c, data, "pruner", "nop")
    if "pruner" in data and pruner.name != "nop":
        c.add(
            "pruner",
            f"{pruner.name!r} cannot prune a study with several objectives (Optuna refuses "
            'trial.report there); remove [pruner], or set name = "nop"',
        )
    return pruner


def check_sampler_space(c: Checker, sampler: Component, params: tuple[Param, ...]) -> None:
    """Grid-like samplers need every parameter discrete."""
    if sampler.name not in ("grid", "bruteforce"):
        return
    for param in params:
        if isinstance(param, FloatParam) and param.step is None:
            c.add(
                join(join("params", param.name), "step"),
                f"missing; the {sampler.name} sampler needs a discrete search space: "
                "give this float a step, or use an int or categorical parameter",
            )
