"""Optuna's pruners under short names: ``[pruner] name = "median"``.

Options are the pruner's own keyword arguments. ``patient`` wraps another built-in pruner given as
a table: ``wrapped = { name = "median", n_warmup_steps = 5 }`` (default: ``nop``).
"""

from __future__ import annotations

from typing import Any

from optspec import LazyFactory, call_factory, hookimpl

PRUNERS = {
    "median": "MedianPruner",
    "percentile": "PercentilePruner",
    "successive_halving": "SuccessiveHalvingPruner",
    "hyperband": "HyperbandPruner",
    "threshold": "ThresholdPruner",
    "nop": "NopPruner",
    "wilcoxon": "WilcoxonPruner",
}


def patient(patience: int, min_delta: float = 0.0, wrapped: dict[str, Any] | None = None) -> Any:
    from optuna.pruners import PatientPruner

    inner = dict(wrapped or {"name": "nop"})
    name = inner.pop("name", "nop")
    if name not in PRUNERS:
        valid = ", ".join(PRUNERS)
        raise ValueError(f"wrapped.name must be one of {valid}, got {name!r}")
    factory = LazyFactory(f"optuna.pruners:{PRUNERS[name]}")
    inner_pruner = call_factory(factory, inner, table="pruner.wrapped", name=name)
    return PatientPruner(inner_pruner, patience=patience, min_delta=min_delta)


@hookimpl
def register_pruners() -> dict[str, Any]:
    factories: dict[str, Any] = {
        name: LazyFactory(f"optuna.pruners:{cls}") for name, cls in PRUNERS.items()
    }
    factories["patient"] = patient
    return factories
