"""``[[enqueue]]``: points evaluated first, each inside the declared space."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from optspec.spec.model import FixedParam, Param
from optspec.spec.tables.checker import Checker, choices_text, describe, join
from optspec.spec.tables.params import space_text


def check_enqueue(c: Checker, value: Any, params: tuple[Param, ...]) -> tuple[dict[str, Any], ...]:
    if not isinstance(value, list):
        c.add("enqueue", f"must be an array of tables ([[enqueue]]), got {describe(value)}")
        return ()
    declared = {param.name: param for param in params}
    points = []
    for index, item in enumerate(value):
        path = f"enqueue[{index}]"
        for name, point in c.table(item, path, None).items():
            param = declared.get(name)
            where = join(path, name)
            if param is None or isinstance(param, FixedParam):
                searchable = [n for n, p in declared.items() if not isinstance(p, FixedParam)]
                what = "is fixed" if param else "is not a declared parameter"
                c.add(where, f"{what}; enqueue one of: {', '.join(searchable) or 'none'}")
            elif not param.contains(point):
                c.add(
                    where,
                    f"{describe(point)} is outside the space of params.{name} "
                    f"({space_text(param)})",
                )
            else:
                _check_condition(c, item, param, where)
        points.append(dict(item) if isinstance(item, dict) else {})
    return tuple(points)


def _check_condition(c: Checker, point: Mapping[str, Any], param: Param, where: str) -> None:
    """A conditional value in a point whose parent value switches the parameter off would be
    silently dropped by optuna; say so."""
    for condition in getattr(param, "when", ()):
        if condition.param in point and not condition.holds(point):
            c.add(
                where,
                f"params.{param.name} exists only when {condition.param} is "
                f"{choices_text(condition.values)}, but this point sets "
                f"{condition.param} = {point[condition.param]!r}",
            )
