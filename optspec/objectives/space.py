"""The declared search space as Optuna sees it: distributions, suggestions, grids."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from optspec.spec.model import CategoricalParam, FixedParam, FloatParam, IntParam, Spec

if TYPE_CHECKING:
    import optuna


def suggest_params(trial: optuna.Trial, spec: Spec) -> dict[str, Any]:
    """Suggest every declared parameter whose ``when`` holds, in declaration order.

    Returns the objective's ``params``: suggested values plus the fixed ones. Order matters:
    ``when`` may only name a parameter declared earlier, so its value is known by then.
    """
    params: dict[str, Any] = {}
    for param in spec.params:
        if isinstance(param, FixedParam):
            params[param.name] = param.value
        elif all(condition.holds(params) for condition in param.when):
            params[param.name] = _suggest(trial, param)
    return params


def _suggest(trial: optuna.Trial, param: FloatParam | IntParam | CategoricalParam) -> Any:
    if isinstance(param, FloatParam):
        return trial.suggest_float(
            param.name, param.low, param.high, step=param.step, log=param.log
        )
    if isinstance(param, IntParam):
        return trial.suggest_int(param.name, param.low, param.high, step=param.step, log=param.log)
    return trial.suggest_categorical(param.name, param.choices)


def grid_values(spec: Spec) -> dict[str, list[Any]]:
    """Every value of each searchable parameter, for grid-like samplers.

    The spec converter already refused continuous floats when the sampler needs a grid.
    """
    grid: dict[str, list[Any]] = {}
    for param in spec.search_params:
        if isinstance(param, CategoricalParam):
            grid[param.name] = list(param.choices)
        elif isinstance(param, IntParam):
            grid[param.name] = list(range(param.low, param.high + 1, param.step))
        elif param.step is not None:
            count = round((param.high - param.low) / param.step) + 1
            grid[param.name] = [param.low + index * param.step for index in range(count)]
    return grid


GRID_SAMPLERS = ("grid",)
"""Samplers that try each point of the declared grid exactly once, then call ``study.stop()``.

Not ``bruteforce``: it too stops the study once every point was tried, but two workers that
sample at the same moment may both pick a point neither has recorded yet. A budget capped at
the grid's size would then end the run with a point never tried; uncapped, the sampler's own
stop ends it once every point was.
"""


def grid_size(spec: Spec) -> int | None:
    """Points of the declared grid when the sampler tries each once (the grid sampler gives
    trial number *i* point *i*); None for other samplers.

    Counted, not listed: an int parameter over a wide range would make a list of every value.
    """
    if spec.sampler.name not in GRID_SAMPLERS:
        return None
    size = 1
    for param in spec.search_params:
        if isinstance(param, CategoricalParam):
            size *= len(param.choices)
        elif isinstance(param, IntParam):
            size *= len(range(param.low, param.high + 1, param.step))
        elif param.step is not None:
            size *= round((param.high - param.low) / param.step) + 1
    return size
