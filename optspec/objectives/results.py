"""From what an objective returned to the values a worker tells the study.

An objective may return a number, a sequence of numbers (one per direction) or a dict of metrics.
:func:`record_result` turns any of them into the list of values in direction order, keeps every
metric of a dict as a user attribute, and records the spec's constraints, so that every objective
kind (python, command, a plugin's) behaves the same once it has returned.

A result that cannot be used raises :class:`TrialFailed` with a reason written for the user; the
worker records it under :data:`FAIL_REASON_ATTR` and tells the trial as FAIL.

Dict results and objectives: ``[[study.objectives]]`` picks each objective's value from the dict
by metric name. Without it (``direction = ...``) a dict is accepted only when the study has one
objective and the dict holds exactly one numeric metric besides those ``[[constraints]]`` read,
which is then the value: a command printing ``{"loss": 0.5}`` just works, while a dict with
several candidate numbers is refused instead of guessed at.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from optspec.run.study_attrs import FAIL_REASON_ATTR
from optspec.util import is_number

if TYPE_CHECKING:
    import optuna

    from optspec.spec.model import Spec

__all__ = ["FAIL_REASON_ATTR", "TrialFailed", "record_result"]


class TrialFailed(Exception):
    """The trial failed for a reason worth keeping with it (``.reason``, shown to the user)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def record_result(trial: optuna.Trial, result: Any, spec: Spec) -> list[float]:
    """The values to tell for ``result``, in direction order; metrics and constraints recorded.

    :raises TrialFailed: the result has the wrong shape, lacks a metric the spec names, or holds
        NaN or something that is not a number where a value is needed.
    """
    if isinstance(result, Mapping):
        metrics = _metrics(result)
        _keep_as_user_attrs(trial, metrics)
        values = _values_from_metrics(metrics, spec)
        _record_constraints(trial, metrics, spec)
        return values
    if spec.constraints:
        names = ", ".join(constraint.metric for constraint in spec.constraints)
        raise TrialFailed(
            f"[[constraints]] read metrics ({names}) from a dict result, but the objective "
            f"returned {_describe(result)}; return a dict of metrics"
        )
    if spec.study.metrics is not None:
        wanted = ", ".join(f'"{metric}": ...' for metric in spec.study.metrics)
        raise TrialFailed(
            f"[[study.objectives]] pick metrics by name, but the objective returned "
            f"{_describe(result)}; return a dict like {{{wanted}}}"
        )
    if is_number(result):
        values = [result]
    elif _is_sequence(result):
        values = list(result)
    else:
        raise TrialFailed(
            f"the objective returned {_describe(result)}; expected a number, a sequence of "
            "numbers (one per direction) or a dict of metrics"
        )
    expected = len(spec.study.objectives)
    if len(values) != expected:
        raise TrialFailed(
            f"returned {_count(len(values), 'value')} for {_count(expected, 'objective')}"
        )
    return [_objective_value(value, f"value {index}") for index, value in enumerate(values)]


def _metrics(result: Mapping[Any, Any]) -> dict[str, Any]:
    return {str(name): value for name, value in result.items()}


def _keep_as_user_attrs(trial: optuna.Trial, metrics: Mapping[str, Any]) -> None:
    # Kept even when the trial then fails (a metric missing, say): what the objective did return
    # is the first thing a user looks at. Values the storage cannot hold as JSON are skipped.
    for name, value in metrics.items():
        plain = _json_compatible(value)
        if plain is not _SKIP:
            trial.set_user_attr(name, plain)


def _values_from_metrics(metrics: Mapping[str, Any], spec: Spec) -> list[float]:
    selected = spec.study.metrics
    if selected is None:
        constrained = {constraint.metric for constraint in spec.constraints}
        numeric = [
            name for name, value in metrics.items() if is_number(value) and name not in constrained
        ]
        if len(spec.study.objectives) != 1 or len(numeric) != 1:
            raise TrialFailed(
                f"the objective returned a dict of metrics ({_names(metrics)}); add one "
                '[[study.objectives]] per objective with metric = "NAME" to say which to use'
            )
        selected = numeric
    missing = [name for name in selected if name not in metrics]
    if missing:
        raise TrialFailed(
            f"metric {missing[0]!r} is missing from the result; metrics present: {_names(metrics)}"
        )
    return [_objective_value(metrics[name], f"metric {name!r}") for name in selected]


def _record_constraints(trial: optuna.Trial, metrics: Mapping[str, Any], spec: Spec) -> None:
    for constraint in spec.constraints:
        if constraint.metric not in metrics:
            raise TrialFailed(
                f"constraint metric {constraint.metric!r} is missing from the result; "
                f"metrics present: {_names(metrics)}"
            )
        value = metrics[constraint.metric]
        what = f"constraint metric {constraint.metric!r}"
        if not is_number(value):
            raise TrialFailed(f"{what} is {_describe(value)}, not a number")
        if math.isnan(value):
            raise TrialFailed(f"{what} is nan")
        trial.set_constraint(constraint.metric, constraint.violation(float(value)))


def _objective_value(value: Any, what: str) -> float:
    if not is_number(value):
        raise TrialFailed(f"{what} of the result is {_describe(value)}, not a number")
    value = float(value)
    if math.isnan(value):
        raise TrialFailed(f"objective returned nan ({what})")
    return value  # inf is a legitimate (if bad) value: optuna accepts it


def _is_sequence(value: Any) -> bool:
    if isinstance(value, str | bytes):
        return False
    # numpy arrays are not Sequences, but say how long they are and iterate like one.
    return isinstance(value, Sequence) or (hasattr(value, "__len__") and hasattr(value, "tolist"))


_SKIP = object()


def _json_compatible(value: Any) -> Any:
    """``value`` as plain JSON data (numpy scalars become floats), or ``_SKIP``."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if is_number(value):
        return float(value)
    if isinstance(value, Mapping):
        items = {str(k): _json_compatible(v) for k, v in value.items()}
        return _SKIP if _SKIP in items.values() else items
    if _is_sequence(value):
        elements = [_json_compatible(v) for v in value]
        return _SKIP if any(e is _SKIP for e in elements) else elements
    return _SKIP


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _names(metrics: Mapping[str, Any]) -> str:
    return ", ".join(metrics) or "none"


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"
