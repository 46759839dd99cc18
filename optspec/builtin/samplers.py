"""Optuna's samplers under short names: ``[sampler] name = "tpe"``.

Each is registered lazily, so listing the names does not import optuna. Options are the sampler's
own keyword arguments; ``seed`` defaults to the study seed offset by the worker index, and the grid
and brute-force samplers get their search space from ``[params]``.
"""

from __future__ import annotations

from typing import Any

from optspec import LazyFactory, hookimpl

SAMPLERS = {
    "tpe": "TPESampler",
    "random": "RandomSampler",
    "cmaes": "CmaEsSampler",
    "nsga2": "NSGAIISampler",
    "nsga3": "NSGAIIISampler",
    "gp": "GPSampler",
    "qmc": "QMCSampler",
    "bruteforce": "BruteForceSampler",
}


def grid(search_space: dict[str, list[Any]], seed: int | None = None) -> Any:
    """GridSampler over every declared parameter's values (the spec checked they are discrete)."""
    from optuna.samplers import GridSampler

    return GridSampler(search_space, seed=seed)


@hookimpl
def register_samplers() -> dict[str, Any]:
    factories: dict[str, Any] = {
        name: LazyFactory(f"optuna.samplers:{cls}") for name, cls in SAMPLERS.items()
    }
    factories["grid"] = grid
    return factories
