"""The report's charts, each from a study's trials: history, Pareto front, importances, slices,
parallel coordinates. Each function returns SVG text, or None when the study cannot show it."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from optspec.report import svg

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution
    from optuna.trial import FrozenTrial

MIN_TRIALS_FOR_IMPORTANCE = 10
"""PED-ANOVA compares the best quantile of trials with all of them; below this it is noise."""


def _minimize(study: optuna.Study, index: int) -> bool:
    from optuna.study import StudyDirection

    return study.directions[index] == StudyDirection.MINIMIZE


def _log_values(values: Sequence[float]) -> bool:
    """A log axis when every value is positive and they span more than three decades."""
    finite = [v for v in values if math.isfinite(v)]
    return bool(finite) and min(finite) > 0 and max(finite) / min(finite) > 1e3


def history(study: optuna.Study, complete: Sequence[FrozenTrial], index: int, name: str) -> str:
    """Each complete trial's value by trial number; for one objective, the best so far too."""
    values = [t.values[index] for t in complete]
    numbers = [float(t.number) for t in complete]
    log = _log_values(values)
    x = svg.x_scale(numbers or [0.0])
    y = svg.y_scale(values, log=log)
    points = [(x(n), y(v)) for n, v in zip(numbers, values, strict=True) if _drawable(v, log)]
    body = svg.dots_path(points, svg.PALETTE[5])
    if len(study.directions) == 1:
        best, best_points = math.nan, []
        minimize = _minimize(study, index)
        for n, v in zip(numbers, values, strict=True):
            if math.isnan(best) or (v < best if minimize else v > best):
                best = v
            if _drawable(best, log):
                best_points.append((x(n), y(best)))
        body += svg.line_path(best_points, svg.ACCENT, step=True)
    return svg.frame(body, x, y, "trial", name, title=f"history of {name}")


def _drawable(value: float, log: bool) -> bool:
    return math.isfinite(value) and (value > 0 or not log)


def pareto(
    study: optuna.Study, complete: Sequence[FrozenTrial], i: int, j: int, names: Sequence[str]
) -> str:
    """Objective ``i`` against ``j``: every complete trial in grey, the Pareto front in colour."""
    from optspec.report.results import pareto_front

    front = {t.number for t in pareto_front(study)}
    xs = [t.values[i] for t in complete]
    ys = [t.values[j] for t in complete]
    x = svg.x_scale(xs, log=_log_values(xs))
    y = svg.y_scale(ys, log=_log_values(ys))
    others: list[tuple[float, float]] = []
    best: list[tuple[float, float]] = []
    for t in complete:
        vx, vy = t.values[i], t.values[j]
        if _drawable(vx, x.log) and _drawable(vy, y.log):
            (best if t.number in front else others).append((x(vx), y(vy)))
    body = svg.dots_path(others, svg.GREY) + svg.dots_path(best, svg.ACCENT, size=7)
    return svg.frame(body, x, y, names[i], names[j], title="Pareto front")


def importances(
    study: optuna.Study, complete: Sequence[FrozenTrial], index: int, name: str
) -> tuple[str | None, str]:
    """Bars of PED-ANOVA importances (Optuna's own evaluator, no extra dependency), or None and
    why not."""
    if len(complete) < MIN_TRIALS_FOR_IMPORTANCE:
        return None, (
            f"needs {MIN_TRIALS_FOR_IMPORTANCE} complete trials, the study has {len(complete)}"
        )
    from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = get_param_importances(
                study,
                evaluator=PedAnovaImportanceEvaluator(),
                target=(lambda t: t.values[index]) if len(study.directions) > 1 else None,
            )
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:
        return None, f"not computed: {exc}"
    if not result:
        return None, "no parameter varies across the complete trials"
    return svg.bars(list(result.items()), f"importance for {name} (PED-ANOVA)"), ""


def _param_axis(
    name: str, distribution: BaseDistribution, values: Sequence[Any]
) -> tuple[list[float | None], svg.Scale]:
    """A parameter's values as numbers and the scale to draw them (choices by position)."""
    from optuna.distributions import CategoricalDistribution

    if isinstance(distribution, CategoricalDistribution):
        labels = [str(choice) for choice in distribution.choices]
        positions = {repr(choice): float(i) for i, choice in enumerate(distribution.choices)}
        numbers = [None if v is _MISSING else positions.get(repr(v)) for v in values]
        return numbers, svg.x_scale([], labels=labels)
    numbers = [None if v is _MISSING else float(v) for v in values]
    log = bool(getattr(distribution, "log", False))
    return numbers, svg.x_scale([n for n in numbers if n is not None], log=log)


_MISSING = object()


def slices(
    study: optuna.Study, complete: Sequence[FrozenTrial], index: int, name: str
) -> list[tuple[str, str]]:
    """One chart per parameter: the objective against the parameter's value."""
    values = [t.values[index] for t in complete]
    log = _log_values(values)
    charts = []
    for param, distribution in _distributions(complete).items():
        raw = [t.params.get(param, _MISSING) for t in complete]
        numbers, x = _param_axis(param, distribution, raw)
        y = svg.y_scale(values, log=log)
        points = [
            (x(n), y(v))
            for n, v in zip(numbers, values, strict=True)
            if n is not None and _drawable(v, log) and _drawable(n, x.log)
        ]
        body = svg.dots_path(points, svg.PALETTE[5], size=4)
        charts.append((param, svg.frame(body, x, y, param, name, title=f"{name} by {param}")))
    return charts


def parallel(
    study: optuna.Study, complete: Sequence[FrozenTrial], index: int, name: str
) -> str | None:
    """Parameters and the objective as parallel axes, lines coloured best (dark) to worst."""
    distributions = _distributions(complete)
    if not distributions:
        return None
    axes, columns = [], []
    for param, distribution in distributions.items():
        numbers, scale = _param_axis(
            param, distribution, [t.params.get(param, _MISSING) for t in complete]
        )
        axes.append((param, _vertical(scale)))
        columns.append(numbers)
    values = [t.values[index] for t in complete]
    log = _log_values(values)
    axes.append((name, svg.y_scale(values, log=log)))
    columns.append([v if _drawable(v, log) else None for v in values])
    rows = list(zip(*columns, strict=True))
    bins = svg.color_bins(
        [v if math.isfinite(v) else math.inf for v in values], _minimize(study, index)
    )
    return svg.parallel(axes, rows, bins)


def _vertical(scale: svg.Scale) -> svg.Scale:
    return svg.Scale(
        scale.low, scale.high, svg.HEIGHT - svg.BOTTOM, svg.TOP, scale.log, scale.labels
    )


def _distributions(trials: Sequence[FrozenTrial]) -> dict[str, BaseDistribution]:
    """Every parameter the trials hold, in first-seen order (a conditional one included)."""
    found: dict[str, BaseDistribution] = {}
    for trial in trials:
        for param, distribution in trial.distributions.items():
            found.setdefault(param, distribution)
    return found
