"""``[[constraints]]``: a metric kept between ``min`` and ``max``."""

from __future__ import annotations

from typing import Any

from optspec.spec.model import Constraint
from optspec.spec.tables.checker import Checker, describe, join
from optspec.util import is_number

CONSTRAINT_KEYS = ("metric", "min", "max")


def check_constraints(c: Checker, value: Any) -> tuple[Constraint, ...]:
    if not isinstance(value, list):
        c.add("constraints", f"must be an array of tables ([[constraints]]), got {describe(value)}")
        return ()
    constraints = []
    for index, item in enumerate(value):
        path = f"constraints[{index}]"
        table = c.table(item, path, CONSTRAINT_KEYS)
        metric = c.metric(table, path)
        low = c.get(table, "min", path, is_number, "a number")
        high = c.get(table, "max", path, is_number, "a number")
        if "min" not in table and "max" not in table:
            c.add(path, "needs min, max or both: feasible when min <= metric <= max")
        elif low is not None and high is not None and low > high:
            c.add(join(path, "min"), f"must be <= max ({high}), got {low}")
        elif metric is not None and (low is not None or high is not None):
            constraints.append(Constraint(metric, low, high))
    return tuple(constraints)
