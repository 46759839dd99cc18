"""``[params]``: the search space, one float, int or categorical table (or fixed value) per name.

Optuna's own rules for distributions are checked here, up front, without importing optuna.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from optspec.spec.model import (
    CategoricalParam,
    Condition,
    FixedParam,
    FloatParam,
    IntParam,
    Param,
)
from optspec.spec.tables.checker import Checker, choices_text, describe, join
from optspec.util import is_int, is_number

FLOAT_KEYS = ("type", "low", "high", "step", "log", "when")
INT_KEYS = FLOAT_KEYS
CATEGORICAL_KEYS = ("type", "choices", "when")
PARAM_TYPES = ("float", "int", "categorical")


def check_params(c: Checker, value: Any) -> tuple[Param, ...]:
    return _ParamsChecker(c).params(value)


def space_text(param: Param) -> str:
    """A parameter's space as a message shows it: ``low = 0, high = 1`` or its choices."""
    if isinstance(param, CategoricalParam):
        return f"choices: {choices_text(param.choices)}"
    assert not isinstance(param, FixedParam)  # a fixed value has no space to show
    text = f"low = {param.low}, high = {param.high}"
    if (isinstance(param, IntParam) and param.step != 1) or (
        isinstance(param, FloatParam) and param.step
    ):
        text += f", step = {param.step}"
    return text


class _ParamsChecker:
    def __init__(self, c: Checker) -> None:
        self.c = c
        # Parameters declared with an error: a `when` naming one is not reported a second time.
        self.broken: set[str] = set()
        self.declared_later: list[str] = []  # while checking a parameter: those after it

    def params(self, value: Any) -> tuple[Param, ...]:
        c = self.c
        table = c.table(value, "params", None)
        params: dict[str, Param] = {}
        for name, item in table.items():
            path = join("params", name)
            if not isinstance(item, dict):
                params[name] = FixedParam(name, item)
                continue
            kind = item.get("type")
            if kind not in PARAM_TYPES:
                got = "missing" if kind is None else f"got {describe(kind)}"
                c.add(
                    join(path, "type"),
                    f'{got}; expected "float", "int" or "categorical" '
                    "(a plain value, not a table, fixes a parameter)",
                )
                c.table(item, path, tuple(dict.fromkeys(FLOAT_KEYS + CATEGORICAL_KEYS)))
                self.broken.add(name)
                continue
            self.declared_later = [n for n in table if n not in params and n != name]
            when = self.conditions(item.get("when"), join(path, "when"), params)
            make = {
                "float": self.float_param,
                "int": self.int_param,
                "categorical": self.categorical_param,
            }[kind]
            param = make(name, item, path, when)
            if param is not None:
                params[name] = param
            else:
                self.broken.add(name)
        return tuple(params.values())

    def conditions(
        self, value: Any, path: str, earlier: Mapping[str, Param]
    ) -> tuple[Condition, ...]:
        if value is None:
            return ()
        conditions = []
        for name, wanted in self.c.table(value, path, None).items():
            where = join(path, name)
            parent = earlier.get(name)
            if name in self.broken:
                continue  # params.NAME already has its own error; do not pile a second one on
            if not isinstance(parent, CategoricalParam):
                problem = _condition_parent_problem(name, parent, earlier)
                if parent is None and name in self.declared_later:
                    problem = f"params.{name} is declared after this parameter; move it above"
                self.c.add(where, problem)
                continue
            values = tuple(wanted) if isinstance(wanted, list) else (wanted,)
            absent = [v for v in values if not parent.contains(v)]
            if absent or not values:
                self.c.add(
                    where,
                    f"{describe(absent[0]) if absent else 'an empty array'} is not a choice "
                    f"of params.{name}; choices: {choices_text(parent.choices)}",
                )
                continue
            conditions.append(Condition(name, values))
        return tuple(conditions)

    def bounds(
        self, item: Mapping[str, Any], path: str, check: Callable[[Any], bool], expected: str
    ) -> tuple[Any, Any]:
        low = self.c.get(item, "low", path, check, expected, required=True)
        high = self.c.get(item, "high", path, check, expected, required=True)
        if low is not None and high is not None and low > high:
            self.c.add(join(path, "low"), f"must be <= high ({high}), got {low}")
            return None, None
        return low, high

    def float_param(
        self, name: str, item: Mapping[str, Any], path: str, when: tuple[Condition, ...]
    ) -> FloatParam | None:
        c = self.c
        c.table(item, path, FLOAT_KEYS)
        finite = lambda v: is_number(v) and math.isfinite(v)  # noqa: E731
        low, high = self.bounds(item, path, finite, "a finite number")
        step = c.get(item, "step", path, lambda v: finite(v) and v > 0, "a number > 0")
        log = c.get(item, "log", path, lambda v: isinstance(v, bool), "true or false", False)
        if log and step is not None:
            c.add(join(path, "step"), "cannot be combined with log = true; remove one of them")
            step = None
        if log and low is not None and low <= 0:
            c.add(join(path, "low"), f"must be > 0 when log = true, got {low}")
            return None
        if low is None or high is None:
            return None
        return FloatParam(
            name, float(low), float(high), None if step is None else float(step), log, when
        )

    def int_param(
        self, name: str, item: Mapping[str, Any], path: str, when: tuple[Condition, ...]
    ) -> IntParam | None:
        c = self.c
        c.table(item, path, INT_KEYS)
        low, high = self.bounds(item, path, is_int, "an integer")
        step = c.get(item, "step", path, lambda v: is_int(v) and v > 0, "an integer > 0", 1)
        log = c.get(item, "log", path, lambda v: isinstance(v, bool), "true or false", False)
        if log and step != 1:
            c.add(join(path, "step"), "must be 1 (or absent) when log = true")
            step = 1
        if log and low is not None and low < 1:
            c.add(join(path, "low"), f"must be >= 1 when log = true, got {low}")
            return None
        if low is None or high is None:
            return None
        return IntParam(name, low, high, step, log, when)

    def categorical_param(
        self, name: str, item: Mapping[str, Any], path: str, when: tuple[Condition, ...]
    ) -> CategoricalParam | None:
        c = self.c
        c.table(item, path, CATEGORICAL_KEYS)
        where = join(path, "choices")
        choices = c.get(
            item,
            "choices",
            path,
            lambda v: isinstance(v, list),
            "an array of choices",
            required=True,
        )
        if choices is None:
            return None
        if not choices:
            c.add(where, "must hold at least one choice")
            return None
        for index, choice in enumerate(choices):
            if not isinstance(choice, str | int | float | bool):
                c.add(
                    f"{where}[{index}]",
                    f"must be a string, number or boolean, got {describe(choice)}",
                )
                return None
        for index, choice in enumerate(choices):
            # Optuna stores a choice by its index found with ==: True and 1 (or 1 and 1.0) collide.
            earlier = [e for e in choices[:index] if e == choice]
            if earlier:
                same = (
                    "is given twice"
                    if type(earlier[0]) is type(choice)
                    else f"equals {describe(earlier[0])} in Python; optuna cannot tell them apart"
                )
                c.add(f"{where}[{index}]", f"{describe(choice)} {same}")
                return None
        return CategoricalParam(name, tuple(choices), when)


def _condition_parent_problem(name: str, parent: Param | None, earlier: Mapping[str, Param]) -> str:
    categoricals = [n for n, p in earlier.items() if isinstance(p, CategoricalParam)]
    valid = f"categorical parameters declared before it: {', '.join(categoricals) or 'none'}"
    if parent is None:
        return f"names no parameter declared before this one; {valid}"
    return f"params.{name} is not categorical; when needs one of the {valid}"
